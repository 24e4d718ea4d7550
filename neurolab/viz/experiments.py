"""Figures of the causal checks (:mod:`neurolab.analysis.knockout`, :mod:`neurolab.analysis.failures`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..analysis.failures import COUNTS, failure_summary

RELATED, UNRELATED = "#d62728", "#9aa0a6"
ARMS = {"heuristic": ("heuristic neurons", "#d62728"), "random": ("random neurons (control)", "#1f77b4")}


def heuristic_knockout_figure(frame: pd.DataFrame, op: str = "") -> go.Figure:
    """Grouped bars per heuristic: accuracy after ablating its neurons on related vs unrelated correct prompts."""
    labels = [f"{h} ({n})" for h, n in zip(frame["heuristic"], frame["neurons"])]
    fig = go.Figure()
    for column, name, colour, count in (("related_accuracy", "prompts it applies to", RELATED, "related_prompts"),
                                        ("unrelated_accuracy", "other prompts", UNRELATED, "unrelated_prompts")):
        fig.add_trace(go.Bar(x=labels, y=frame[column], name=name, marker_color=colour, customdata=frame[count],
                             hovertemplate="%{x}<br>accuracy %{y:.3f} on %{customdata} prompts<extra></extra>"))
    fig.update_layout(barmode="group", title=f"Heuristic knockout{f' ({op})' if op else ''}: accuracy after "
                      "ablating each heuristic's neurons", xaxis_title="heuristic (neurons ablated)",
                      yaxis_title="accuracy after ablation", yaxis_range=[0, 1.02], legend_title="evaluated on")
    return fig


def prompt_knockout_figure(frame: pd.DataFrame, op: str = "") -> go.Figure:
    """Accuracy against N (neurons ablated per layer), the prompt's heuristic neurons vs random ones."""
    fig = go.Figure()
    for arm, part in frame.sort_values("n").groupby("arm"):
        name, colour = ARMS.get(arm, (arm, None))
        fig.add_trace(go.Scatter(x=part["n"], y=part["accuracy"], mode="lines+markers", name=name,
                                 line_color=colour, customdata=part["neurons"],
                                 hovertemplate="N = %{x}<br>accuracy %{y:.3f}<br>%{customdata:.1f} neurons ablated "
                                               "per prompt<extra></extra>"))
    fig.update_layout(title=f"Prompt knockout{f' ({op})' if op else ''}: ablating each prompt's heuristic neurons",
                      xaxis_title="N, neurons ablated per layer (at most)", yaxis_title="accuracy",
                      yaxis_range=[0, 1.02], legend_title="ablated")
    return fig


def failure_figure(frame: pd.DataFrame, op: str = "") -> go.Figure:
    """Mean neuron counts per group (correct / wrong prompts): should fire, fire and should, fire in total."""
    summary = failure_summary(frame)
    names = {"should_fire": "should fire", "fire_and_should": "fire and should", "fire_total": "fire (total)"}
    fig = go.Figure()
    for group, colour in (("correct", "#2ca02c"), ("wrong", "#d62728")):
        row = summary[summary["group"] == group]
        if row.empty:
            continue
        fig.add_trace(go.Bar(x=[names[c] for c in COUNTS], y=[float(row[c].iloc[0]) for c in COUNTS],
                             name=f"{group} ({int(row['prompts'].iloc[0])} prompts)", marker_color=colour,
                             hovertemplate="%{x}: %{y:.1f} neurons<extra></extra>"))
    fig.update_layout(barmode="group", title=f"Failure analysis{f' ({op})' if op else ''}: heuristic neurons per "
                      "prompt", xaxis_title="heuristic neurons", yaxis_title="mean neurons per prompt",
                      legend_title="prompts")
    return fig
