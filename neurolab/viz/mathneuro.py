"""Figures of MathNeuro: accuracy against K for the method and its baselines, where the selected weights sit, the
frontier (math drop against non-math change over K and K-general) and the scaling study per condition."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLOURS = {"mathneuro": "#d62728", "random": "#7f7f7f", "wanda": "#1f77b4"}


def k_sweep_figure(evaluation: pd.DataFrame, factor: float = 0.0) -> go.Figure:
    """Math (mean of the four operators) and non-math accuracy against K, per method, beside the clean model."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["math (mean over + - * /)", "non-math"], shared_yaxes=True)
    clean = evaluation[evaluation["method"] == "clean"].iloc[0]
    for col, metric in enumerate(("math", "nonmath"), start=1):
        for method, colour in COLOURS.items():
            part = evaluation[evaluation["method"] == method].sort_values("k")
            if part.empty:
                continue
            fig.add_trace(go.Scatter(x=part["k"], y=part[metric], mode="lines+markers", name=method,
                                     line={"color": colour}, showlegend=col == 1,
                                     hovertemplate=f"{method} K=%{{x}}: %{{y:.3f}}<extra></extra>"), row=1, col=col)
        fig.add_hline(y=float(clean[metric]), line_dash="dot", annotation_text="clean", row=1, col=col)
        fig.update_xaxes(title="K (top fraction per matrix)", type="log", row=1, col=col)
    fig.update_yaxes(title="accuracy", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=f"Accuracy after multiplying the selected weights by {factor:g}, against K", height=380,
                      margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


def matrix_figure(table: pd.DataFrame, k: float) -> go.Figure:
    """Math-specific weights per layer and module (bars stacked by module)."""
    frame = table.assign(where=table["layer"].map(lambda v: "outside the blocks" if pd.isna(v) else f"layer {int(v)}"))
    fig = go.Figure()
    for module, part in frame.groupby("module", sort=True):
        fig.add_trace(go.Bar(x=part["where"], y=part["selected"], name=module,
                             customdata=part["share"], hovertemplate=f"{module}: %{{y:,}} weights "
                                                                     "(%{customdata:.2%} of it)<extra></extra>"))
    fig.update_layout(barmode="stack", title=f"Math-specific weights per layer and matrix (K = {k:g})",
                      yaxis={"title": "weights"}, height=380, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def frontier_figure(table: pd.DataFrame, tolerance: float = 0.05) -> go.Figure:
    """Math drop against held-out non-math change under pruning, one series per K-general, K along each line; the
    non-math tolerance as a dotted line (points right of it keep non-math)."""
    fig = go.Figure()
    for series, part in table.sort_values("k").groupby("series", sort=False):
        fig.add_trace(go.Scatter(
            x=part["nonmath_change"], y=part["math_drop"], mode="lines+markers+text", text=part["k"].map("{:g}".format),
            textposition="top center", name=series,
            customdata=part[["k", "weights"]].to_numpy(),
            hovertemplate="K %{customdata[0]:g}, %{customdata[1]:,} weights: math %{y:+.3f}, "
                          "non-math %{x:+.3f}<extra></extra>"))
    fig.add_vline(x=-tolerance, line_dash="dot", annotation_text=f"non-math -{tolerance:g}")
    fig.update_layout(title="Pruning frontier: math drop vs non-math change (held-out facts), labels = K",
                      xaxis={"title": "non-math accuracy change (held-out facts)"},
                      yaxis={"title": "math accuracy change (mean of + - * /)"}, height=420,
                      margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def scaling_figure(table: pd.DataFrame) -> go.Figure:
    """Per condition, the gain in math accuracy against the factor, math-specific weights vs the random control,
    with 95% bootstrap intervals."""
    conditions = list(dict.fromkeys(table["condition"]))
    fig = make_subplots(rows=1, cols=len(conditions), subplot_titles=conditions, shared_yaxes=True)
    for col, cond in enumerate(conditions, start=1):
        for method, colour in (("mathneuro", COLOURS["mathneuro"]), ("random", COLOURS["random"])):
            part = table[(table["condition"] == cond) & (table["method"] == method)].sort_values("factor")
            fig.add_trace(go.Scatter(
                x=part["factor"], y=part["gain"], mode="lines+markers", name=method, line={"color": colour},
                showlegend=col == 1, error_y={"type": "data", "symmetric": False,
                                              "array": part["gain_hi"] - part["gain"],
                                              "arrayminus": part["gain"] - part["gain_lo"]},
                customdata=part[["accuracy", "clean"]].to_numpy(),
                hovertemplate=f"{method} x%{{x:g}}: gain %{{y:+.3f}} (accuracy %{{customdata[0]:.3f}} from "
                              "%{customdata[1]:.3f})<extra></extra>"), row=1, col=col)
        fig.add_hline(y=0, line_dash="dot", row=1, col=col)
        fig.update_xaxes(title="factor", row=1, col=col)
    fig.update_yaxes(title="math accuracy gain over clean", row=1, col=1)
    fig.update_layout(title="Scaling the math-specific weights vs as many random weights (95% bootstrap intervals)",
                      height=400, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig
