"""One neuron over the op1 x op2 grid: its K or KV map, folded modulo n, and against the result."""

import numpy as np
import streamlit as st

from neurolab.analysis.neuron_maps import MAP_KINDS, load_neuron_map, neuron_map, neuron_matches
from neurolab.analysis.sweep import NeuronSelection, find_sweep, grid_for, plan_sweep, run_sweep
from neurolab.analysis.value_lens import matching_set, number_line, result_predicate
from neurolab.errors import NeurolabError
from neurolab.models.adapters import neuron_label, parse_neuron_label
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS
from neurolab.tasks.grid import TEMPLATES, PromptTemplate
from neurolab.viz.figures import (
    folded_figure,
    grid_heatmap,
    heuristic_mask_figure,
    number_line_figure,
    result_figure,
)
from pages import model_sidebar, most_active_neurons, pick_neuron, progress_bar, shared_store

st.set_page_config(page_title="neurolab · operand grid", page_icon="🧮", layout="wide")
st.title("Operand grid")
model = model_sidebar()
store = shared_store()

c1, c2, c3, c4 = st.columns(4)
op = c1.selectbox("Operator", OPERATORS, key="grid_op")
st.session_state.setdefault("grid_max_op", 100)  # defaults via state: the Atlas page may have set them
max_op = c2.number_input("max_op", min_value=2, max_value=model.max_single_token + 1, key="grid_max_op",
                         help="operands are 0 <= op < max_op")
template_name = c3.selectbox("Template", [*TEMPLATES, "custom"], key="grid_template")
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

try:
    sweep_id = find_sweep(model, store, grid)
    stored = store.sweep_info(sweep_id)["stored"] if sweep_id is not None else {}
except NeurolabError as error:
    st.error(str(error))
    st.stop()

if not stored:
    plan = plan_sweep(model.n_layers, model.d_mlp, len(model.number_token_ids), len(grid), NeuronSelection())
    st.info(f"The {op} grid ({len(grid):,} prompts, template `{template.key}`) has no stored neuron maps for this "
            f"model yet. The sweep would store {plan.describe(len(model.number_token_ids))}.")
    if st.button(f"Run the sweep ({len(grid):,} prompts)", key="run_sweep"):
        with progress_bar("sweeping", "prompts") as progress:
            result = run_sweep(model, store, op, max_op=int(max_op), template=template, progress=progress)
        sweep_id, stored = result.sweep_id, store.sweep_info(result.sweep_id)["stored"]
        st.success(f"Stored {result.n_prompts:,} prompts x {len(result.layers)} layers in {store.path}.")
if not stored:
    st.stop()

prompts = store.cached_prompts(sweep_id)
st.caption(f"Model accuracy on this grid: {prompts['correct'].mean():.1%} of {len(prompts):,} prompts "
           f"(store: {store.path}).")

left, right = st.columns([1, 2])
layers = sorted(stored)
if st.session_state.get("grid_layer") not in layers:
    st.session_state["grid_layer"] = layers[-1]
layer = left.selectbox("Layer", layers, key="grid_layer", help="layers with stored neurons; type any neuron")
top = most_active_neurons(str(store.path), sweep_id, layer, stored[layer])
options = [f"{row.label}  (std {row.std_k:.3f}, max {row.max_k:.3f})" for row in top.itertuples()]
picked = left.selectbox("Most active neurons of the layer", options, key="grid_pick")
typed = right.text_input("…or type a neuron", placeholder="L3N12", key="grid_typed")
try:
    target_layer, neuron = parse_neuron_label(typed) if typed.strip() else parse_neuron_label(picked.split()[0])
    if not 0 <= target_layer < model.n_layers or not 0 <= neuron < model.d_mlp:
        raise ValueError(f"{typed.strip()} is outside layers 0..{model.n_layers - 1} x neurons 0..{model.d_mlp - 1}")
except ValueError as error:
    st.error(str(error))
    st.stop()

if neuron in store.stored_neurons(sweep_id).get(target_layer, set()):
    nmap = load_neuron_map(store, sweep_id, target_layer, neuron, kind, prompts=prompts)
else:  # not in the sweep's selection: one grid pass capturing this neuron, then cached
    with st.spinner(f"Computing {neuron_label(target_layer, neuron)}'s map over the grid ..."):
        nmap = neuron_map(model, store, op, target_layer, neuron, kind, int(max_op), template)
matches = neuron_matches(store, sweep_id, target_layer, neuron)
operands = (prompts["op1"].to_numpy(), prompts["op2"].to_numpy(), prompts["answer"].to_numpy())
overlay = None
if matches.empty:
    st.caption(f"{nmap.label} has no stored heuristic match for {op} (classify it on the Heuristic Atlas page).")
else:
    st.subheader(f"{nmap.label}'s heuristics")
    st.dataframe(matches, hide_index=True)
    overlay = st.selectbox("Draw the matching set of", [None, *matches["heuristic"]], key="grid_overlay")
if overlay is not None:
    mask = matching_set(overlay, *operands)
    left_fig, right_fig = st.columns(2)
    left_fig.plotly_chart(grid_heatmap(nmap, int(max_op), op), key="grid_heatmap")
    right_fig.plotly_chart(heuristic_mask_figure(nmap, mask, int(max_op), overlay), key="grid_mask")
else:
    st.plotly_chart(grid_heatmap(nmap, int(max_op), op), key="grid_heatmap")
predicate = result_predicate(overlay) if overlay else None
results = operands[2]
line = number_line(model, target_layer, neuron)
st.plotly_chart(number_line_figure(line, nmap.label, results,
                                   predicate(np.arange(len(line))) if predicate else None, overlay or ""),
                key="grid_number_line")
n = st.slider("Fold modulo n", 2, 20, 10, key="grid_mod")
a, b = st.columns(2)
a.plotly_chart(folded_figure(nmap, n), key="grid_folded")
b.plotly_chart(result_figure(nmap), key="grid_result")
st.button(f"Pick {nmap.label} for the Ablation Lab", key="grid_pick_ablation", on_click=pick_neuron,
          args=(nmap.label,))
st.download_button(f"Download {neuron_label(target_layer, neuron)} {kind} map (CSV)",
                   nmap.to_frame().to_csv(index=False), file_name=f"{nmap.label}-{kind}-{OP_NAMES[op]}.csv",
                   key="grid_download")
