"""Heatmaps of component patching effects (rows: components, columns: positions labelled by the prompt's tokens)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METRIC_NAMES = {
    "fraction": "share of the clean → counterfactual logit-difference swing",
    "logit_diff": "drop of logit(r) − logit(r′)",
    "ie": "indirect effect (IE)",
}


def _row_order(frame: pd.DataFrame) -> list[str]:
    """Per layer: its MLP first, then its heads in order."""
    keys = frame[["component", "layer", "head"]].drop_duplicates()
    keys = keys.assign(order=keys["head"].astype("Float64").fillna(-1.0))
    return keys.sort_values(["layer", "order"])["component"].tolist()


def circuit_heatmap(frame: pd.DataFrame, value: str = "effect", metric: str | None = None,
                    title: str | None = None) -> go.Figure:
    """One heatmap: rows ``L0 MLP, L0H0, ...``, columns the positions (``position: token``), colour the effect
    (diverging, centred on 0). ``metric`` names what ``value`` holds, for the colour bar and title."""
    rows = _row_order(frame)
    positions = sorted(frame["position"].unique())
    tokens = frame.drop_duplicates("position").set_index("position")["token"]
    columns = [f"{p}: {tokens[p]}" for p in positions]  # unique even when a token repeats
    wide = frame.pivot_table(index="component", columns="position", values=value, aggfunc="first", dropna=False)
    wide = wide.reindex(index=rows, columns=positions)
    z = wide.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    name = METRIC_NAMES.get(metric or "", metric or value)
    pairs = int(frame["pairs"].iloc[0]) if "pairs" in frame and len(frame) else None
    example = f" (e.g. {frame['example'].iloc[0]})" if "example" in frame and len(frame) else ""
    fig = go.Figure(go.Heatmap(
        z=z, x=columns, y=rows, colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit,
        colorbar=dict(title=metric or value),
        hovertemplate="%{y} at %{x}<br>" + (metric or value) + " = %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=title or f"Activation patching: {name}" + (f", {pairs} prompt pairs" if pairs else "") + example,
        xaxis=dict(title="position: token", type="category"),
        yaxis=dict(title="component", type="category", autorange="reversed"),
        height=max(300, 22 * len(rows) + 120), margin=dict(l=10, r=10, t=60, b=10),
    )
    return fig
