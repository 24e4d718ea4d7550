"""Figures of MathNeuro: accuracy against K for the method and its baselines, and where the selected weights sit."""

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
