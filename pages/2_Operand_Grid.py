"""One neuron over the op1 x op2 grid: its K or KV map, folded modulo n, and against the result."""

import streamlit as st

from neurolab.analysis.neuron_maps import MAP_KINDS, NeuronMap, neuron_matches
from neurolab.analysis.sweep import NeuronSelection, find_sweep, grid_for, plan_sweep, run_sweep
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.export.bundle import Export
from neurolab.export.provenance import Provenance
from neurolab.models.adapters import neuron_label, parse_neuron_label
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS
from neurolab.tasks.grid import TEMPLATES, PromptTemplate
from pages import (
    active_intervention,
    model_sidebar,
    most_active_neurons,
    open_view,
    pick_neuron,
    progress_bar,
    shared_store,
    state,
)
from pages.common import export

st.set_page_config(page_title="neurolab · operand grid", page_icon="🧮", layout="wide")
st.title("Operand grid")
model = model_sidebar()
store = shared_store()

c1, c2, c3, c4 = st.columns(4)
op = c1.selectbox("Operator", OPERATORS, key=state.OP)
max_op = c2.number_input("max_op", min_value=2, max_value=model.max_single_token + 1, key=state.MAX_OP,
                         help="operands are 0 <= op < max_op")
template_name = c3.selectbox("Template", [*TEMPLATES, "custom"], key=state.TEMPLATE)
st.session_state.setdefault("grid_kind", MAP_KINDS[0])
kind = c4.radio("Map", MAP_KINDS, horizontal=True, key="grid_kind",
                help="K: the neuron's activation. KV: activation x its value vector's logit on the right answer.")
try:
    if template_name == "custom":
        template = PromptTemplate(st.text_input("Custom template", "{op1} {op} {op2} =", key="grid_custom"))
    else:
        template = TEMPLATES[template_name]
    grid = grid_for(model, op, int(max_op), template)
except ValueError as error:
    st.error(str(error))
    st.stop()

active = active_intervention()  # every map and accuracy here is the model's under it
condition = f" under {active.describe()}" if active is not None else ""
try:
    sweep_id = find_sweep(model, store, grid, active)
    stored = store.sweep_info(sweep_id)["stored"] if sweep_id is not None else {}
except NeurolabError as error:
    st.error(str(error))
    st.stop()

if not stored:
    offer = st.empty()  # the offer goes once the sweep has run
    with offer.container():
        plan = plan_sweep(model.n_layers, model.d_mlp, len(model.number_token_ids), len(grid), NeuronSelection())
        st.info(f"The {op} grid ({len(grid):,} prompts, template `{template.key}`){condition} has no stored neuron "
                f"maps for this model yet. The sweep would store {plan.describe(len(model.number_token_ids))}.")
        run_now = st.button(f"Run the sweep ({len(grid):,} prompts)", key="run_sweep")
    if run_now:
        with progress_bar("sweeping", "prompts") as progress:
            result = run_sweep(model, store, op, max_op=int(max_op), template=template, intervention=active,
                               progress=progress)
        sweep_id, stored = result.sweep_id, store.sweep_info(result.sweep_id)["stored"]
        offer.empty()
        st.success(f"Stored {result.n_prompts:,} prompts x {len(result.layers)} layers in {store.path}.")
if not stored:
    st.stop()

prompts = store.cached_prompts(sweep_id)
st.caption(f"Model accuracy on this grid{condition}: {prompts['correct'].mean():.1%} of {len(prompts):,} prompts "
           f"(store: {store.path}).")

VIEWS = ("Map", "Folded mod n", "By result", "Value lens")  # one drawn at a time: a neuron change redraws one chart


def _typed() -> None:
    """A typed neuron becomes the one state's neuron (and layer); a bad one is kept for the message below."""
    text = st.session_state["grid_typed"].strip()
    try:
        typed_layer, typed_neuron = parse_neuron_label(text)
    except ValueError:
        return
    st.session_state[state.LAYER], st.session_state[state.NEURON] = typed_layer, neuron_label(typed_layer,
                                                                                              typed_neuron)
    st.session_state["grid_typed"] = ""


@st.fragment
def neuron_view() -> None:
    """Everything that depends on the layer and the neuron: picking another reruns only this part, and draws only
    the open view (the others are computed when opened, and all of them for the report, on click)."""
    left, right = st.columns([1, 2])
    layers = sorted(stored)
    if st.session_state.get(state.LAYER) not in range(model.n_layers):
        st.session_state[state.LAYER] = layers[-1]
    if st.session_state[state.LAYER] not in layers:  # a typed or linked neuron of a layer no sweep stored
        layers = sorted({*layers, st.session_state[state.LAYER]})
    layer = left.selectbox("Layer", layers, key=state.LAYER, on_change=state.put, args=(state.NEURON, None),
                           help="layers with stored neurons; type any neuron")
    top = most_active_neurons(str(store.path), sweep_id, layer, stored.get(layer, 0)) if layer in stored else None
    labels = [] if top is None else list(top["label"])
    current = st.session_state.get(state.NEURON)
    if current is None or parse_neuron_label(current)[0] != layer:  # the layer changed: its most active neuron
        current = labels[0] if labels else neuron_label(layer, 0)
        st.session_state[state.NEURON] = current
    choices = labels if current in labels else [current, *labels]
    left.selectbox("Most active neurons of the layer", choices, key=state.NEURON,
                   help="the layer's stored neurons by the spread of their activation over the grid")
    if top is not None and current in labels:
        row = top[top["label"] == current].iloc[0]
        left.caption(f"{current}: std {row['std_k']:.3f}, max {row['max_k']:.3f} over the grid")
    typed = right.text_input("…or type a neuron", placeholder="L3N12", key="grid_typed", on_change=_typed)
    state.publish()  # this part reruns alone: the URL follows the neuron here
    try:
        if typed.strip():  # left in the box only when it did not parse
            parse_neuron_label(typed)
        target_layer, neuron = parse_neuron_label(st.session_state[state.NEURON])
        if not 0 <= target_layer < model.n_layers or not 0 <= neuron < model.d_mlp:
            raise ValueError(f"{neuron_label(target_layer, neuron)} is outside layers 0..{model.n_layers - 1} x "
                             f"neurons 0..{model.d_mlp - 1}")
    except ValueError as error:
        st.error(str(error))
        return

    label = neuron_label(target_layer, neuron)
    chosen = {"op": op, "max_op": int(max_op),
              "template": template_name if template_name != "custom" else template.format, "neuron": label,
              "map": kind}
    with st.spinner(f"Reading {label}'s map (a neuron no sweep stored is computed over the grid once) ..."):
        nmap = kinds.neuron_map_for(model, store, chosen, active)
    matches = neuron_matches(store, sweep_id, target_layer, neuron)
    overlay = None
    if matches.empty:
        st.caption(f"{nmap.label} has no stored heuristic match for {op} (classify it on the Heuristic Atlas page).")
    else:
        st.subheader(f"{nmap.label}'s heuristics")
        export.table(matches, "grid_matches", f"{label}-heuristics-{OP_NAMES[op]}",
                     Provenance.of("heuristic-matches", model, chosen, active))
        overlay = st.selectbox("Draw the matching set of", [None, *matches["heuristic"]], key="grid_overlay")
    lens_choice = {**{k: chosen[k] for k in ("op", "max_op", "template", "neuron")}, "heuristic": overlay}

    view, pane = open_view(VIEWS, "grid_view")
    with pane:
        if view == "Map":
            heatmap = kinds.heatmap_export(model, chosen, active, nmap)
            if overlay is None:
                export.chart(heatmap, "grid_heatmap")
            else:
                left_fig, right_fig = st.columns(2)
                with left_fig:
                    export.chart(heatmap, "grid_heatmap")
                with right_fig:
                    export.chart(kinds.overlay_export(model, {**chosen, "heuristic": overlay}, active, nmap),
                                 "grid_mask")
        elif view == "Folded mod n":
            folded(chosen, nmap)
        elif view == "By result":
            export.chart(kinds.result_export(model, chosen, active, nmap), "grid_result")
        else:
            export.chart(kinds.build("lens", model, store, lens_choice), "grid_number_line")
    st.button(f"Pick {nmap.label} for the Ablation Lab", key="grid_pick_ablation", on_click=pick_neuron,
              args=(nmap.label,))

    def every_view() -> list[Export]:
        """The report's figures, built on click: every view of the neuron, whichever is open."""
        views = [kinds.heatmap_export(model, chosen, active, nmap)]
        if overlay is not None:
            views.append(kinds.overlay_export(model, {**chosen, "heuristic": overlay}, active, nmap))
        fold = {**chosen, "mod": st.session_state.get("grid_mod", 10)}
        return [*views, kinds.build("lens", model, store, lens_choice),
                kinds.result_export(model, chosen, active, nmap), kinds.folded_export(model, fold, active, nmap)]

    def summary() -> list[str]:
        """The report's key numbers: the grid's accuracy, the neuron's spread and its best heuristic."""
        lines = [f"Model accuracy on the {op} grid (max_op {int(max_op)}){condition}: {prompts['correct'].mean():.1%} "
                 f"of {len(prompts):,} prompts.",
                 f"{label} {kind}: mean {nmap.values.mean():.4f}, std {nmap.values.std():.4f}, "
                 f"max {nmap.values.max():.4f}, min {nmap.values.min():.4f} over the grid."]
        if not matches.empty:
            best = matches.iloc[0]
            lines.append(f"Top heuristic: {best['heuristic']} (score {best['score']:.3f}); {len(matches)} matches in "
                         "all.")
        return lines

    export.report(every_view, f"{label}-{kind}-{OP_NAMES[op]}-report", summary, "grid_report",
                  f"Report on {label} (zip)")


@st.fragment
def folded(chosen: dict, nmap: NeuronMap) -> None:
    """Moving n redraws only the folded map."""
    n = st.slider("Fold modulo n", 2, 20, 10, key="grid_mod")
    export.chart(kinds.folded_export(model, {**chosen, "mod": n}, active, nmap), "grid_folded")


neuron_view()
