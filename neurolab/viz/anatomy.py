"""Figures of a neuron's anatomy (map and decomposition, spectrum, helix fit, wiring thumbnails) and of a layer's
(shapes, result fraction against direct effect, method agreement, patch-the-fit accuracy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..anatomy.helix import sign_combinations
from ..anatomy.shape import LABELS, Operands, additive_decomposition
from .margins import grid_margins

SHAPE_COLOURS = dict(zip(LABELS, ("#9aa0a6", "#1f77b4", "#17becf", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e",
                                  "#8c564b", "#7f7f7f")))


def square(values: np.ndarray, operands: Operands, max_op: int) -> np.ndarray:
    """``[max_op, max_op]``: op1 rows, op2 columns, NaN off the grid."""
    grid = np.full((max_op, max_op), np.nan)
    grid[operands.a, operands.b] = values
    return grid


def _heatmap(z: np.ndarray, name: str, showscale: bool = False) -> go.Heatmap:
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    return go.Heatmap(z=z, colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit, showscale=showscale, name=name,
                      hovertemplate="op1 %{y}, op2 %{x}: %{z:.3f}<extra>" + name + "</extra>")


def decomposition_figure(values: np.ndarray, operands: Operands, max_op: int, label: str,
                         parts: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None) -> go.Figure:
    """The map beside its additive decomposition: row effect (op1), column effect (op2), interaction. ``parts``:
    the decomposition when the caller has it already."""
    mu, row, col, interaction = parts if parts is not None else additive_decomposition(values, operands)
    fig = make_subplots(rows=1, cols=4, subplot_titles=["map", "row effect (op1)", "column effect (op2)",
                                                        "interaction"], horizontal_spacing=0.06)
    fig.add_trace(_heatmap(square(values, operands, max_op), "map", True), row=1, col=1)
    fig.add_trace(go.Scatter(x=np.arange(len(row)), y=row, mode="lines", name="row"), row=1, col=2)
    fig.add_trace(go.Scatter(x=np.arange(len(col)), y=col, mode="lines", name="column"), row=1, col=3)
    fig.add_trace(_heatmap(square(interaction, operands, max_op), "interaction"), row=1, col=4)
    for c in (1, 4):
        fig.update_xaxes(title_text="op2", row=1, col=c)
        fig.update_yaxes(title_text="op1", autorange="reversed", row=1, col=c)
    fig.update_xaxes(title_text="op1", row=1, col=2)
    fig.update_xaxes(title_text="op2", row=1, col=3)
    fig.update_layout(title=f"{label}: map = {mu:.3f} + row(op1) + col(op2) + interaction", height=330,
                      showlegend=False)
    return grid_margins(fig, max_op)


def spectrum_figure(values: np.ndarray, operands: Operands, max_op: int, row: pd.Series, complete: bool
                    ) -> go.Figure:
    """Left: the 2-D DFT's power (complete grids; k1 for op1 rows, k2 for op2 columns, shifted so 0 is central) or
    the group means over r (incomplete grids). Right: per period, the periodic share of a, b and r beside the
    residue AUROC (a period claim needs both)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=["2-D DFT power (mean removed)" if complete else "mean over prompts per r",
                                        "period: spectral share vs residue AUROC"])
    if complete:
        grid = square(values, operands, max_op)
        power = np.abs(np.fft.fftshift(np.fft.fft2(grid - grid.mean()))) ** 2
        k = np.arange(max_op) - max_op // 2
        fig.add_trace(go.Heatmap(z=np.log10(power + 1e-12), x=k, y=k, colorscale="Viridis", showscale=False,
                                 hovertemplate="k1 %{y}, k2 %{x}: log10 power %{z:.2f}<extra></extra>"), row=1, col=1)
        fig.update_xaxes(title_text="k2 (op2)", row=1, col=1)
        fig.update_yaxes(title_text="k1 (op1)", row=1, col=1)
    else:
        means = pd.Series(values).groupby(operands.r).mean()
        fig.add_trace(go.Scatter(x=means.index, y=means.to_numpy(), mode="lines", name="mean by r"), row=1, col=1)
        fig.update_xaxes(title_text="result", row=1, col=1)
    for quantity, colour in zip("abr", ("#1f77b4", "#17becf", "#d62728")):
        periods = [int(c.split(",")[1][:-1]) for c in row.index if c.startswith(f"share[{quantity},")]
        fig.add_trace(go.Bar(x=[f"{quantity} T={t}" for t in periods],
                             y=[row[f"share[{quantity},{t}]"] for t in periods], name=f"share ({quantity})",
                             marker_color=colour), row=1, col=2)
        fig.add_trace(go.Scatter(x=[f"{quantity} T={t}" for t in periods],
                                 y=[row[f"auroc[{quantity},{t}]"] for t in periods], mode="markers",
                                 marker=dict(symbol="diamond", size=9, color="black"), name="AUROC",
                                 showlegend=quantity == "a"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=60, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def helix_figure(frame: pd.DataFrame, max_op: int, fit_row: pd.DataFrame | None = None) -> go.Figure:
    """Per pre-activation map (one, or gate and up): the map, its helix fit and the residual, on one colour scale."""
    points = list(dict.fromkeys(frame["point"]))
    fig = make_subplots(rows=len(points), cols=3, subplot_titles=[f"{p}: {what}" for p in points
                                                                  for what in ("pre-activation", "helix fit",
                                                                               "residual")],
                        vertical_spacing=0.12, horizontal_spacing=0.05)
    for i, point in enumerate(points, start=1):
        part = frame[frame["point"] == point]
        operands = Operands(part["op1"].to_numpy(), part["op2"].to_numpy(), part["answer"].to_numpy())
        for j, column in enumerate(("pre", "fit", "residual"), start=1):
            fig.add_trace(_heatmap(square(part[column].to_numpy(), operands, max_op), column, j == 1 and i == 1),
                          row=i, col=j)
            fig.update_yaxes(autorange="reversed", row=i, col=j)
    title = "helix fit of the pre-activation"
    if fit_row is not None and len(fit_row):
        title += ": " + "; ".join(f"{r.point} NRMSE {r.nrmse:.3f}, dominant {r.dominant}, result fraction "
                                  f"{r.result_fraction:.2f}" for r in fit_row.itertuples())
    fig.update_layout(title=title, height=300 * len(points) + 40, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def thumbnail(values: np.ndarray, operands: Operands, max_op: int, title: str) -> go.Figure:
    """A small operand map (the wiring's inputs and outputs)."""
    fig = go.Figure(_heatmap(square(values, operands, max_op), title))
    fig.update_yaxes(autorange="reversed", visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(title=dict(text=title, font=dict(size=11)), height=170, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def shapes_figure(table: pd.DataFrame) -> go.Figure:
    """Neurons per shape, per layer (stacked bars)."""
    counts = table.groupby(["layer", "shape"]).size().unstack(fill_value=0)
    fig = go.Figure([go.Bar(x=[f"L{layer}" for layer in counts.index], y=counts[shape], name=shape,
                            marker_color=SHAPE_COLOURS.get(shape)) for shape in LABELS if shape in counts])
    fig.update_layout(barmode="stack", title="Shapes per layer", yaxis_title="neurons", height=320,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def fraction_vs_effect_figure(table: pd.DataFrame, fraction: str = "result_fraction_pre") -> go.Figure:
    """Kantamneni's figure 10: each neuron's helix result fraction against its direct effect on the answer (mean KV:
    activation times its value vector's logit on the right answer), coloured by shape."""
    fig = go.Figure()
    for shape, part in table.groupby("shape"):
        fig.add_trace(go.Scatter(x=part[fraction], y=part["direct_effect"], mode="markers", name=shape,
                                 marker=dict(color=SHAPE_COLOURS.get(shape), size=6), text=part["label"],
                                 hovertemplate="%{text}: result fraction %{x:.2f}, direct effect %{y:.3f}"
                                               "<extra>" + shape + "</extra>"))
    fig.update_layout(title="Result fraction of the helix fit vs direct effect on the answer",
                      xaxis_title="|r| fraction", yaxis_title="direct effect (mean KV)", height=380,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def agreement_figure(scores: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Attribution patching's score against exact activation patching's, per neuron, one colour per layer, with
    each layer's Spearman rho in the legend."""
    fig = go.Figure()
    rho = summary.set_index("layer")["rho_all"]
    for layer, part in scores.groupby("layer"):
        fig.add_trace(go.Scatter(x=part["activation"], y=part["attribution"], mode="markers",
                                 name=f"L{layer} (rho {rho.get(layer, np.nan):.2f})", marker=dict(size=5),
                                 text=[f"L{layer}N{n}" for n in part["neuron"]],
                                 hovertemplate="%{text}: activation %{x:.4f}, attribution %{y:.4f}<extra></extra>"))
    fig.update_layout(title="Attribution vs exact activation patching (score = mean + std of IE)",
                      xaxis_title="activation patching", yaxis_title="attribution patching", height=380,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def patch_fit_figure(frame: pd.DataFrame) -> go.Figure:
    """Accuracy per layer: clean, top neurons patched to their helix fits, and mean-ablated."""
    fig = go.Figure([go.Bar(x=[f"L{layer}" for layer in frame["layer"]], y=frame[column], name=name,
                            marker_color=colour, text=[f"{v:.3f}" for v in frame[column]], textposition="auto")
                     for column, name, colour in (("clean", "clean", "#2ca02c"), ("fit", "patched to fit", "#1f77b4"),
                                                  ("mean_ablated", "mean-ablated", "#9aa0a6"))])
    fig.update_layout(barmode="group", title="Patch the fit: accuracy over the grid", yaxis=dict(range=[0, 1.05]),
                      height=320, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def sign_map_figure(frame: pd.DataFrame, max_op: int) -> go.Figure:
    """A gated neuron's four sign combinations of gate x up over the grid (GLUScope's reading of gated neurons)."""
    gate, up = (frame[frame["point"] == p] for p in ("gate", "up"))
    operands = Operands(gate["op1"].to_numpy(), gate["op2"].to_numpy(), gate["answer"].to_numpy())
    codes = square(sign_combinations(gate["pre"].to_numpy(), up["pre"].to_numpy()).astype(float), operands, max_op)
    colours = ["#d62728", "#ff7f0e", "#17becf", "#1f77b4"]
    scale = [[i / 4 + d, colours[i]] for i in range(4) for d in (0, 0.25)]
    fig = go.Figure(go.Heatmap(z=codes, zmin=-0.5, zmax=3.5, colorscale=scale,
                               colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=["gate+ up+", "gate+ up-", "gate- up+",
                                                                              "gate- up-"]),
                               hovertemplate="op1 %{y}, op2 %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="op1")
    fig.update_xaxes(title_text="op2")
    fig.update_layout(title="Sign combinations of gate x up", height=360, margin=dict(l=10, r=10, t=50, b=10))
    return fig
