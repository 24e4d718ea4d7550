"""Plotly figures, built in the core so pages only place them and the CLI can export the same ones."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .neuron_maps import NeuronMap
from .predict import PromptReport


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
        yaxis=dict(autorange="reversed", type="category"), height=300, margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


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
    fig.update_layout(
        title="Most active neurons at the last position, per layer", showlegend=False, height=380,
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def grid_heatmap(nmap: NeuronMap, max_op: int, op: str) -> go.Figure:
    """The neuron over op1 (rows) x op2 (columns), diverging colours centred on 0; hover tells the whole story."""
    z = nmap.matrix(max_op)
    index = np.full((max_op, max_op), -1)
    index[nmap.prompts["op1"].to_numpy(), nmap.prompts["op2"].to_numpy()] = np.arange(len(nmap.prompts))
    p = nmap.prompts
    text = np.where(
        index >= 0,
        np.array([f"{a}{op}{b}={r}<br>model: {t} ({'right' if c else 'wrong'})"
                  for a, b, r, t, c in zip(p["op1"], p["op2"], p["answer"], p["top1"], p["correct"])] + [""])[index],
        "not on the grid",
    )
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(max_op)), y=list(range(max_op)), text=text, colorscale="RdBu_r", zmid=0,
        zmin=-bound, zmax=bound, colorbar=dict(title=nmap.kind),
        hovertemplate="%{text}<br>" + nmap.kind + " = %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=f"{nmap.label} {nmap.kind} map over the {op} grid", xaxis_title="op2", yaxis_title="op1",
        height=620, margin=dict(l=10, r=10, t=50, b=10),
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x")
    return fig


def folded_figure(nmap: NeuronMap, n: int) -> go.Figure:
    """Mean value by (op1 mod n, op2 mod n): a modulo heuristic shows as a bright row, column or cell."""
    fig = go.Figure(go.Heatmap(
        z=nmap.folded(n), x=list(range(n)), y=list(range(n)), colorscale="RdBu_r", zmid=0,
        hovertemplate="op1 ≡ %{y}, op2 ≡ %{x} (mod " + str(n) + ")<br>mean = %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(title=f"{nmap.label} folded mod {n}", xaxis_title=f"op2 mod {n}", yaxis_title=f"op1 mod {n}",
                      height=420, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(dtick=1)
    return fig


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
                      height=420, margin=dict(l=10, r=10, t=50, b=10))
    return fig
