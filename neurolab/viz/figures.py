"""Plotly figures, built in the core so pages only place them and the CLI can export the same ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.neuron_maps import NeuronMap
from ..analysis.predict import PromptReport
from ..analysis.significance import FDR
from .margins import AXIS_TITLE_PX, fixed_margins, grid_margins, label_px


def next_token_figure(report: PromptReport) -> go.Figure:
    """Bars of the top next tokens; the correct answer in green, others grey."""
    answer = str(report.prompt.answer)
    tokens = [t for t, _ in report.top_tokens]
    fig = go.Figure(go.Bar(
        x=[p for _, p in report.top_tokens], y=tokens, orientation="h",
        marker_color=["#2ca02c" if t == answer else "#9aa0a6" for t in tokens],
        text=[f"{p:.1%}" for _, p in report.top_tokens], textposition="auto",
        hovertemplate="token %{y}<br>p = %{x:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=f"Next token after {report.text!r} (answer {answer})", xaxis_title="probability",
        yaxis=dict(autorange="reversed", type="category"), height=300,
    )
    return fixed_margins(fig, left=label_px(tokens) + 12, bottom=20 + AXIS_TITLE_PX, top=50)


def top_neurons_figure(report: PromptReport) -> go.Figure:
    """One panel per layer: its most active neurons at the last position, labelled ``L{layer}N{neuron}``."""
    layers = sorted(report.top_neurons)
    fig = make_subplots(
        rows=1, cols=len(layers), subplot_titles=[f"layer {layer}" for layer in layers], shared_yaxes=False
    )
    for col, layer in enumerate(layers, start=1):
        items = report.top_neurons[layer]
        fig.add_trace(go.Bar(
            x=[n.activation for n in items], y=[n.label for n in items], orientation="h", name=f"layer {layer}",
            marker_color=["#d62728" if n.activation >= 0 else "#1f77b4" for n in items],
            customdata=[[report.hook_names[layer], report.module_paths[layer]] for _ in items],
            hovertemplate="%{y}: %{x:.3f}<br>%{customdata[0]}<br>input of %{customdata[1]}<extra></extra>",
        ), row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
    fig.update_layout(title="Most active neurons at the last position, per layer", showlegend=False, height=380)
    labels = [n.label for layer in layers for n in report.top_neurons[layer]]
    return fixed_margins(fig, left=label_px(labels) + 12, bottom=30, top=70)


def grid_heatmap(nmap: NeuronMap, max_op: int, op: str) -> go.Figure:
    """The neuron over op1 (rows) x op2 (columns), diverging colours centred on 0; hover tells the whole story.

    The hover's numbers travel as one small integer array (the answer, the model's answer, right or wrong) that
    Plotly sends as binary, not as 10,000 strings: a 100 x 100 map is ~5x smaller to send and to parse in the
    browser, which redraws it on every change of neuron."""
    z = nmap.matrix(max_op)
    p = nmap.prompts
    rows, columns = p["op1"].to_numpy(), p["op2"].to_numpy()
    hover = np.full((max_op, max_op, 3), -1, dtype=np.int32)  # answer, model's answer, 1 right / 0 wrong
    hover[rows, columns] = np.stack([p["answer"].to_numpy(), p["top1"].to_numpy(), p["correct"].to_numpy()], -1)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(max_op), y=np.arange(max_op), customdata=hover, colorscale="RdBu_r", zmid=0,
        zmin=-bound, zmax=bound, colorbar=dict(title=nmap.kind), hoverongaps=False,
        hovertemplate=f"%{{y}}{op}%{{x}}=%{{customdata[0]}}<br>model: %{{customdata[1]}} (right: %{{customdata[2]}})"
                      f"<br>{nmap.kind} = %{{z:.4f}}<extra></extra>",
    ))
    fig.update_layout(
        title=f"{nmap.label} {nmap.kind} map over the {op} grid", xaxis_title="op2", yaxis_title="op1", height=620,
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x")
    fig.update_xaxes(constrain="domain")
    return grid_margins(fig, max_op, top=50)


def folded_figure(nmap: NeuronMap, n: int) -> go.Figure:
    """Mean value by (op1 mod n, op2 mod n): a modulo heuristic shows as a bright row, column or cell."""
    fig = go.Figure(go.Heatmap(
        z=nmap.folded(n), x=list(range(n)), y=list(range(n)), colorscale="RdBu_r", zmid=0,
        hovertemplate="op1 ≡ %{y}, op2 ≡ %{x} (mod " + str(n) + ")<br>mean = %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(title=f"{nmap.label} folded mod {n}", xaxis_title=f"op2 mod {n}", yaxis_title=f"op1 mod {n}",
                      height=420)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(dtick=1)
    return grid_margins(fig, n, top=50)


def result_figure(nmap: NeuronMap) -> go.Figure:
    """Value against the result: a range or result-pattern heuristic shows as a band over some answers."""
    stats = nmap.by_result()
    fig = go.Figure([
        go.Scatter(x=stats["answer"], y=stats["max"], mode="lines", line=dict(width=0), showlegend=False,
                   hoverinfo="skip"),
        go.Scatter(x=stats["answer"], y=stats["min"], mode="lines", line=dict(width=0), fill="tonexty",
                   fillcolor="rgba(31,119,180,0.2)", name="min..max", hoverinfo="skip"),
        go.Scatter(x=stats["answer"], y=stats["mean"], mode="lines+markers", name="mean", marker=dict(size=4),
                   customdata=stats["count"],
                   hovertemplate="result %{x}<br>mean = %{y:.4f}<br>%{customdata} prompts<extra></extra>"),
    ])
    fig.update_layout(title=f"{nmap.label} against the result", xaxis_title="result", yaxis_title=nmap.kind,
                      height=420)
    return fixed_margins(fig, left=label_px(["-0.000"]) + AXIS_TITLE_PX + 8, bottom=20 + AXIS_TITLE_PX, top=50)


def atlas_counts_figure(table: pd.DataFrame) -> go.Figure:
    """Neurons with a heuristic per layer, side by side per display group (one panel per operator); a neuron with
    heuristics of two groups counts in both, so the bars are not stacked. Where ``table`` has ``significant`` (the
    neurons whose heuristic is significant at the FDR), a hatched bar beside each group's raw bar shows it."""
    ops = sorted(table["op"].unique()) or ["+"]
    fig = make_subplots(rows=1, cols=len(ops), subplot_titles=[f"operator {op}" for op in ops], shared_yaxes=True)
    colours = {"range": "#1f77b4", "modulo": "#ff7f0e", "pattern": "#2ca02c", "other": "#9467bd"}
    kinds = [("neurons", "", "")] + ([("significant", ", significant", "/")] if "significant" in table else [])
    shown: set[str] = set()
    for col, op in enumerate(ops, start=1):
        part = table[table["op"] == op]
        for group, colour in colours.items():
            rows = part[part["grp"] == group]
            if rows.empty:
                continue
            for column, suffix, hatch in kinds:
                name = group + suffix
                fig.add_trace(go.Bar(x=rows["layer"], y=rows[column], name=name, marker_color=colour,
                                     marker_pattern_shape=hatch, opacity=0.6 if hatch else 1.0, legendgroup=name,
                                     showlegend=name not in shown,
                                     hovertemplate=f"{name}: %{{y}} neurons in layer %{{x}}<extra></extra>"),
                              row=1, col=col)
                shown.add(name)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    title = "Classified neurons per layer and group" + (f" (hatched: significant at FDR {FDR})" if len(kinds) > 1
                                                          else "")
    fig.update_layout(barmode="group", title=title, height=330, yaxis_title="neurons",
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def number_line_figure(line: np.ndarray, label: str, results: np.ndarray,
                       satisfied: np.ndarray | None = None, heuristic: str = "") -> go.Figure:
    """The value vector's logit on every number that is a result on the grid; the heuristic's results marked."""
    values = np.unique(results)
    fig = go.Figure(go.Scatter(x=values, y=line[values], mode="lines", name="logit", line=dict(color="#444"),
                               hovertemplate="number %{x}<br>logit %{y:.3f}<extra></extra>"))
    if satisfied is not None:
        hit = values[satisfied[values]]
        fig.add_trace(go.Scatter(x=hit, y=line[hit], mode="markers", name=heuristic,
                                 marker=dict(color="#d62728", size=5),
                                 hovertemplate="number %{x} (" + heuristic + ")<br>logit %{y:.3f}<extra></extra>"))
    order = np.argsort(-line[values])
    fig.update_layout(
        title=f"{label} value vector on the number line (promotes {', '.join(map(str, values[order[:5]]))} ...)",
        xaxis_title="number token", yaxis_title="direct logit per unit activation", height=360)
    return fixed_margins(fig, left=label_px(["-0.00"]) + AXIS_TITLE_PX + 8, bottom=20 + AXIS_TITLE_PX, top=50)


def heuristic_mask_figure(nmap: NeuronMap, mask: np.ndarray, max_op: int, heuristic: str) -> go.Figure:
    """The heuristic's matching set on the grid, drawn like the heatmap, to set side by side with it."""
    z = np.full((max_op, max_op), np.nan)
    z[nmap.prompts["op1"].to_numpy(), nmap.prompts["op2"].to_numpy()] = mask.astype(float)
    fig = go.Figure(go.Heatmap(z=z, colorscale=[[0, "#f0f0f0"], [1, "#222"]], zmin=0, zmax=1, showscale=False,
                               hovertemplate="op1 %{y}, op2 %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=f"matching set of {heuristic}", xaxis_title="op2", yaxis_title="op1", height=620)
    fig.update_yaxes(autorange="reversed", scaleanchor="x")
    return grid_margins(fig, max_op, top=50)
