"""Toggle an ablation and watch the whole grid: accuracy, the effect map, a random control, the current prompt."""

from functools import partial

import streamlit as st

from neurolab.analysis.ablation import ablate_grid, heuristic_neurons, top_n
from neurolab.analysis.atlas import atlas
from neurolab.analysis.sweep import grid_for
from neurolab.capture.interventions import Intervention, parse_neurons
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.models.adapters import neuron_label
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS, PromptError
from pages import ACTIVE_KEY, PICKS_KEY, model_sidebar, open_view, progress_bar, shared_store, state
from pages.common import export

LAB_APPLIED = "lab_applied"  # the key of the ablation this page turned on (what its toggle may turn off)

st.set_page_config(page_title="neurolab · ablation lab", page_icon="🧮", layout="wide")
st.title("Ablation Lab")
model = model_sidebar()
store = shared_store()

for key, default in {"lab_mode": "zero", "lab_seed": 0, "lab_source": "picked", "lab_typed": "L3N12, L3N40",
                     "lab_layer": model.n_layers - 1, "lab_top_n": 50, "lab_name": ""}.items():
    st.session_state.setdefault(key, default)  # remembered across pages (pages/state.py), so set once, here
c1, c2, c3, c4 = st.columns(4)
op = c1.selectbox("Operator", OPERATORS, key=state.OP)
max_op = int(c2.number_input("max_op", 2, model.max_single_token + 1, key=state.MAX_OP))
mode = c3.radio("Ablation", ["zero", "mean"], horizontal=True, key="lab_mode",
                help="zero: the paper's; mean: the neuron's mean over the operator's grid, at every position")
seed = int(c4.number_input("Control seed", 0, 10_000, key="lab_seed",
                           help="the random control: as many neurons per layer from the same layers' top-200"))
grid = grid_for(model, op, max_op)

source = st.radio("Neurons", ["picked", "typed", "heuristic", "layer top-N", "saved"], horizontal=True,
                  key="lab_source", help="picked: neurons clicked on the home page or picked on the Operand Grid")
try:
    if source == "picked":
        picks = st.session_state.get(PICKS_KEY, [])
        chosen = st.multiselect("Picked neurons", picks, default=picks, key="lab_picks")
        neurons, origin = list(parse_neurons(",".join(chosen))) if chosen else [], "manual"
    elif source == "typed":
        typed = st.text_input("Neurons", key="lab_typed", help="L<layer>N<neuron>, comma separated")
        neurons, origin = list(parse_neurons(typed)), "manual"
    elif source == "heuristic":
        frame = atlas(store, model.fingerprint)
        names = frame[frame["op"] == op]["heuristic"].value_counts()
        if names.empty:
            st.info(f"Nothing is classified for {op} yet: classify it on the Heuristic Atlas page first.")
            st.stop()
        heuristic = st.selectbox("Heuristic (neurons)", [f"{h} ({n})" for h, n in names.items()], key="lab_heuristic")
        name = heuristic.rsplit(" (", 1)[0]
        neurons, origin = heuristic_neurons(model, store, grid, name), f"heuristic {name}"
    elif source == "layer top-N":
        l1, l2 = st.columns(2)
        layer = int(l1.number_input("Layer", 0, model.n_layers - 1, key="lab_layer"))
        count = int(l2.number_input("Top N by importance", 1, model.d_mlp, key="lab_top_n"))
        neurons, origin = top_n(model, store, grid, layer, count), f"top-{count} of layer {layer}"
    else:
        saved = store.interventions()
        if saved.empty:
            st.info("No saved ablation yet: every ablation turned on here is saved.")
            st.stop()
        label = st.selectbox("Saved ablations", [f"{r.name or '-'} · {r.key}" for r in saved.itertuples()],
                             key="lab_saved")
        loaded = Intervention.from_json(*store.load_intervention(label.rsplit(" · ", 1)[1]))
        neurons = list(loaded.neurons)
        origin = loaded.origin or "saved"
except (NeurolabError, ValueError) as error:
    st.error(str(error))
    st.stop()

if not neurons:
    st.info("No neuron chosen yet.")
    st.stop()
st.caption(f"{len(neurons)} neurons ({origin}): " + ", ".join(f"L{a}N{b}" for a, b in neurons[:30])
           + (" ..." if len(neurons) > 30 else ""))
name = st.text_input("Name", key="lab_name", placeholder=f"{origin}: {len(neurons)} neurons")
labels = [neuron_label(*n) for n in neurons]
selected = {"op": op, "max_op": max_op, "neurons": labels, "mode": mode, "seed": seed, "name": name, "origin": origin}
chosen = kinds.ablation_of(model, selected)


def _graph(prompt: str | None) -> dict:
    """The chosen neurons on the clean model's grid, with their activations on the lab's current prompt."""
    from neurolab.export.graph import neuron_graph

    return neuron_graph(model, store, labels, op, max_op, prompt=prompt)


export.graph(partial(_graph, st.session_state.get(state.PROMPT) or None),
             f"ablation-neurons-{OP_NAMES[op]}.graph.json", "lab_graph",
             f"These {len(labels)} neurons as a graph (JSON)")
st.session_state["_lab_chosen"] = chosen  # what the toggle turns on (its callback runs before the next rerun)


def _toggled() -> None:
    """The toggle turns the chosen ablation on or off before the page reruns, so the sidebar, drawn first, is right
    at once (no second run). Off turns off only what this page turned on, never a MathNeuro edit."""
    if st.session_state["ablation_on"]:
        chosen = st.session_state["_lab_chosen"]
        shared_store().save_intervention(chosen.to_json(), chosen.tensors())
        st.session_state[ACTIVE_KEY] = st.session_state[LAB_APPLIED] = chosen.key
    elif st.session_state.get(ACTIVE_KEY) == st.session_state.get(LAB_APPLIED):
        st.session_state[ACTIVE_KEY] = st.session_state[LAB_APPLIED] = None


st.session_state.setdefault("ablation_on", False)
on = st.toggle("Ablation on", key="ablation_on", on_change=_toggled,
               help="applies to every page of this browser session while on")
if not on:
    st.stop()
if st.session_state.get(ACTIVE_KEY) != chosen.key:  # other neurons or mode while on: the ablation follows them
    store.save_intervention(chosen.to_json(), chosen.tensors())
    st.session_state[ACTIVE_KEY] = st.session_state[LAB_APPLIED] = chosen.key
    st.rerun()  # so the sidebar (drawn first) shows the new ablation
with progress_bar("ablation", "prompts") as update:
    result = ablate_grid(model, store, op, chosen, max_op, control_seed=seed, progress=update)

summary = result.summary()


def change(value: float) -> str | None:
    """A metric's delta, or none where it rounds to nothing (never "-0.000" with an arrow)."""
    return None if abs(value) < 5e-4 else f"{value:+.3f}"


m1, m2, m3 = st.columns(3)
m1.metric("Accuracy, clean", f"{summary['before']:.3f}")
m2.metric("Accuracy, ablated", f"{summary['after']:.3f}", change(summary["after"] - summary["before"]),
          help=f"{chosen.describe()}")
m3.metric("Random control", f"{summary['control']:.3f}", change(summary["control"] - summary["before"]),
          help=result.control.describe())
VIEWS = ("Effect over the grid", "Accuracy", "The current prompt")  # one drawn at a time: a toggle redraws one view
view, pane = open_view(VIEWS, "lab_view")
with pane:
    if view == "Effect over the grid":
        effect = kinds.ablation_export(model, selected, result)
        export.chart(effect, "lab_effect")
        st.subheader("Results that lost most")
        export.table(result.results_lost(10), "lab_lost", f"ablation-lost-{OP_NAMES[op]}-{chosen.key}",
                     effect.provenance, static=True)
    elif view == "Accuracy":
        export.chart(kinds.ablation_accuracy_export(model, selected, result), "lab_accuracy")


def report_lines() -> list[str]:
    lines = [f"Ablation: {chosen.describe()} (`{chosen.key}`), {mode}-ablated, {len(neurons)} neurons ({origin}), "
             f"on the {op} grid (max_op {max_op}, {len(result.prompts):,} prompts).",
             f"Accuracy clean {summary['before']:.3f}, ablated {summary['after']:.3f}"
             + (f", random control {summary['control']:.3f} ({result.control.describe()})." if "control" in summary
                else ".")]
    lost = result.results_lost(3)
    if len(lost):
        lines.append("Results that lost most: " + ", ".join(f"{int(r.answer)} ({r.accuracy_lost:.0%} of its prompts)"
                                                            for r in lost.itertuples()) + ".")
    return lines


export.report(lambda: [kinds.ablation_accuracy_export(model, selected, result),
                       kinds.ablation_export(model, selected, result)],
              f"ablation-{OP_NAMES[op]}-{chosen.key}-report", report_lines, "lab_report",
              "Report on this ablation (zip)")


@st.fragment
def current_prompt() -> None:
    """A prompt typed here reruns only this part (the rest of the page stays as it is)."""
    st.subheader("The current prompt under the ablation")
    text = st.text_input("Prompt", key=state.PROMPT, max_chars=state.MAX_PROMPT)
    state.publish()
    asked = {"prompt": text}
    try:
        clean, ablated = kinds.prompt_report(model, asked), kinds.prompt_report(model, asked, chosen)
    except PromptError as error:
        st.error(f"Malformed prompt: {error}")
        return
    a, b = st.columns(2)
    with a:
        export.chart(kinds.prediction_export(model, asked, None, clean), "lab_clean_tokens")
    with b:
        export.chart(kinds.prediction_export(model, asked, chosen, ablated), "lab_ablated_tokens")


if view == "The current prompt":
    with pane:
        current_prompt()
