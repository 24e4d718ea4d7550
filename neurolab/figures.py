"""Plotly figures, built in the core so pages only place them and the CLI can export the same ones."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
