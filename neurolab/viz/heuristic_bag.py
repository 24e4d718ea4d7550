"""The bag of heuristics as a waterfall: each heuristic group's direct push on logit(answer) - logit(runner-up),
then what the groups leave unexplained, ending at the model's actual logit difference."""

from __future__ import annotations

import plotly.graph_objects as go

from ..analysis.heuristic_bag import HeuristicBag

#: heuristic groups drawn as their own bar; the rest are folded into one "other heuristics" bar
MAX_GROUPS = 12
#: neurons named per bar in the hover (the rest are counted)
HOVER_NEURONS = 12
UNEXPLAINED = "unexplained (other neurons, attention, biases)"
TOTAL = "total"


def _neuron_list(labels: list[str]) -> str:
    shown = ", ".join(labels[:HOVER_NEURONS])
    return shown + (f" +{len(labels) - HOVER_NEURONS} more" if len(labels) > HOVER_NEURONS else "")


def bag_figure(bag: HeuristicBag, max_groups: int = MAX_GROUPS) -> go.Figure:
    """One bar per heuristic group (largest |contribution| first, at most ``max_groups``; the rest as one "other
    heuristics" bar), the unexplained remainder, and the total logit difference. A bar's name ends with its number
    of neurons; its hover lists them."""
    groups = bag.groups
    shown, folded = groups.iloc[:max_groups], groups.iloc[max_groups:]
    names = [f"{row.heuristic} ({len(row.neurons)})" for row in shown.itertuples()]
    values = [float(v) for v in shown["contribution"]]
    hover = [f"{row.group} heuristic, {len(row.neurons)} neurons:<br>{_neuron_list(row.neurons)}"
             for row in shown.itertuples()]
    if len(folded):
        labels = [n for row in folded.itertuples() for n in row.neurons]
        names.append(f"{len(folded)} other heuristics ({len(labels)})")
        values.append(float(folded["contribution"].sum()))
        hover.append(f"{len(folded)} heuristics, {len(labels)} neurons:<br>{_neuron_list(labels)}")
    names += [UNEXPLAINED, TOTAL]
    values += [bag.remainder, bag.total]
    hover += ["neurons that are not classified, do not fire or whose heuristics do not apply here;<br>"
              "attention, embeddings, biases",
              f"logit({bag.answer_token}) - logit({bag.runner_up_token}) at this prompt"]
    fig = go.Figure(go.Waterfall(
        x=names, y=values, measure=["relative"] * (len(names) - 1) + ["total"], customdata=hover,
        text=[f"{v:+.2f}" for v in values], textposition="outside",
        increasing={"marker": {"color": "#2ca02c"}}, decreasing={"marker": {"color": "#d62728"}},
        totals={"marker": {"color": "#1f77b4"}}, connector={"line": {"color": "#b0b0b0", "width": 1}},
        hovertemplate="<b>%{x}</b>: %{y:+.3f}<br>%{customdata}<extra></extra>",
    ))
    verdict = "right" if bag.correct else "wrong"
    note = "" if bag.intervention == "clean model" else f", under {bag.intervention}"
    if bag.groups.empty:
        note += ": not classified yet" if not bag.classified else ": no heuristic neuron fires here"
    fig.update_layout(
        title=f"Bag of heuristics of {bag.text!r}: answer {bag.answer_token} vs runner-up {bag.runner_up_token}"
              f"<br><sup>model {verdict}{note}</sup>",
        yaxis_title="contribution to logit(answer) − logit(runner-up) [logits]",
        xaxis={"type": "category", "tickangle": -30}, template="plotly_white", showlegend=False, height=460,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    fig.add_vline(x=len(names) - 2.5, line={"color": "#9aa0a6", "dash": "dot", "width": 1})  # heuristics | rest
    return fig
