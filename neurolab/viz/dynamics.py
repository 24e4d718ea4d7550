"""Figures of training dynamics and template robustness: lines over the training step, raw beside significant."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..analysis.dynamics import SHARE_GROUPS

COLOURS = {"any": "#333333", "range": "#1f77b4", "modulo": "#ff7f0e", "pattern": "#2ca02c", "other": "#9467bd",
           "+": "#1f77b4", "-": "#ff7f0e", "*": "#2ca02c", "/": "#d62728"}


def _lines(table: pd.DataFrame, series: list[tuple[str, str, str, str]], title: str, y_title: str) -> go.Figure:
    """``series``: (column, name, colour, dash) drawn over ``step``, hover naming the checkpoint."""
    fig = go.Figure()
    for column, name, colour, dash in series:
        if column in table:
            fig.add_trace(go.Scatter(
                x=table["step"], y=table[column], name=name, mode="lines+markers", customdata=table["checkpoint"],
                line=dict(color=colour, dash=dash),
                hovertemplate=f"{name}<br>%{{customdata}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title=y_title, height=360,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def accuracy_figure(table: pd.DataFrame) -> go.Figure:
    ops = [c.removeprefix("accuracy_") for c in table if c.startswith("accuracy_") and len(c) == len("accuracy_") + 1]
    return _lines(table, [(f"accuracy_{op}", op, COLOURS[op], "solid") for op in ops],
                  "Accuracy per operator over training", "accuracy")


def share_figure(table: pd.DataFrame) -> go.Figure:
    """Share of top neurons with a heuristic, per group: raw (solid) and significant at the FDR (dashed)."""
    series = [(f"share_{group}_{kind}", f"{group}, {kind}", COLOURS[group], "solid" if kind == "raw" else "dash")
              for group in ("any", *SHARE_GROUPS) for kind in ("raw", "significant")]
    return _lines(table, series, "Top neurons with a heuristic (solid: raw, dashed: significant at FDR)", "share")


def ablation_figure(table: pd.DataFrame) -> go.Figure:
    return _lines(table, [("accuracy_before", "clean", "#333333", "solid"),
                          ("accuracy_ablated", "heuristic neurons ablated", "#d62728", "solid"),
                          ("accuracy_control", "random control", "#7f7f7f", "dash")],
                  "Ablating the top heuristic neurons vs a random control", "accuracy")


def intersection_figure(table: pd.DataFrame) -> go.Figure:
    return _lines(table, [("intersection_raw", "raw", "#1f77b4", "solid"),
                          ("intersection_significant", "significant", "#1f77b4", "dash")],
                  "Share of the final model's (neuron, heuristic) matches present", "share")


def survival_figure(survival: pd.DataFrame) -> go.Figure:
    """Per template: the share of the reference template's matches that hold, raw beside significant."""
    fig = go.Figure([go.Bar(x=survival["template"], y=survival[f"survive_{kind}"], name=kind,
                            hovertemplate=f"{kind}: %{{y:.3f}}<extra></extra>")
                     for kind in ("raw", "significant")])
    fig.update_layout(barmode="group", title="Heuristics that survive a change of template", yaxis_title="share",
                      height=330, margin=dict(l=10, r=10, t=50, b=10))
    return fig
