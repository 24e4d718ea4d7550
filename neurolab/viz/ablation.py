"""Figures of an ablation over a grid: accuracy before, after and under the random control, and the effect map."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..analysis.ablation import GridAblation
from .margins import AXIS_TITLE_PX, fixed_margins, grid_margins, label_px


def accuracy_figure(result: GridAblation) -> go.Figure:
    """Three bars: the grid's accuracy before, after the ablation, and under its random control."""
    summary = result.summary()
    names = {"before": "clean", "after": "ablated", "control": "random control"}
    fig = go.Figure(go.Bar(x=[names[k] for k in summary], y=list(summary.values()),
                           marker_color=["#7f7f7f", "#d62728", "#1f77b4"][: len(summary)],
                           text=[f"{v:.3f}" for v in summary.values()], textposition="outside"))
    fig.update_layout(title=f"{result.grid.op} accuracy, {len(result.prompts):,} prompts<br>"
                            f"<sup>{result.intervention.describe()}</sup>",
                      yaxis={"range": [0, 1.1], "title": "accuracy"}, height=330)
    return fixed_margins(fig, left=label_px(["0.0"]) + AXIS_TITLE_PX + 8, bottom=30)


def effect_map_figure(result: GridAblation, which: str = "after") -> go.Figure:
    """op1 x op2: change of the correct answer's probability, diverging and centred on 0 (grey off the grid)."""
    z = result.effect_map(which)
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    label = "ablation" if which == "after" else "random control"
    fig = go.Figure(go.Heatmap(z=z, zmid=0, zmin=-limit, zmax=limit, colorscale="RdBu",
                               colorbar={"title": "Δ p(answer)"},
                               hovertemplate=f"%{{y}}{result.grid.op}%{{x}}: Δp %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=f"Effect of the {label} on p(correct answer) over op1 x op2",
                      xaxis={"title": "op2", "constrain": "domain"}, yaxis={"title": "op1", "scaleanchor": "x"},
                      height=480)
    return grid_margins(fig, z.shape[0])
