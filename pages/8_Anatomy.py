"""Neuron anatomy: what function of the operands a neuron computes (shape, spectrum, helix fit), how it wires to
other layers, and for a layer the shapes, result fraction vs direct effect, method agreement and patch-the-fit."""

import numpy as np
import pandas as pd
import streamlit as st

from neurolab.analysis.sweep import find_sweep, grid_for
from neurolab.anatomy.agreement import agreement_summary
from neurolab.anatomy.helix import helix_fits, neuron_helix, patch_the_fit
from neurolab.anatomy.shape import Operands
from neurolab.anatomy.spectrum import is_complete
from neurolab.anatomy.wiring import stored_connections
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.models.adapters import neuron_label, parse_neuron_label
from neurolab.models.loading import LoadedModel
from neurolab.store import Store
from neurolab.tasks.arithmetic import OPERATORS
from neurolab.tasks.grid import TEMPLATES
from pages import active_intervention, model_sidebar, open_view, progress_bar, shared_store, state
from pages.common import export

st.set_page_config(page_title="neurolab · anatomy", page_icon="🧬", layout="wide")
st.title("Neuron anatomy")
model = model_sidebar()
store = shared_store()

c1, c2, c3, c4 = st.columns(4)
op = c1.selectbox("Operator", OPERATORS, key=state.OP)
max_op = int(c2.number_input("max_op", min_value=2, max_value=model.max_single_token + 1, key=state.MAX_OP))
template_name = c3.selectbox("Template", list(TEMPLATES), key="anatomy_template",
                             index=list(TEMPLATES).index(st.session_state.get(state.TEMPLATE, "plain"))
                             if st.session_state.get(state.TEMPLATE) in TEMPLATES else 0)
template = TEMPLATES[template_name]
if st.session_state.get(state.LAYER) not in range(model.n_layers):
    st.session_state[state.LAYER] = model.n_layers - 1
layer = c4.selectbox("Layer", list(range(model.n_layers)), key=state.LAYER)
active = active_intervention()
condition = f" under {active.describe()}" if active is not None else ""
grid = grid_for(model, op, max_op, template)
#: the figure kinds' selection of this page (neurolab.export.kinds: anatomy-*)
chosen = {"op": op, "max_op": max_op, "template": template_name, "layer": layer}

try:
    if find_sweep(model, store, grid, active) is None and not st.button(
            f"Sweep the {op} grid ({len(grid):,} prompts){condition} and compute the layer's anatomy",
            key="anatomy_run"):
        st.info(f"No sweep of the {op} grid is stored for this model yet.")
        st.stop()
    with progress_bar("anatomy", "prompts") as progress:  # every layer swept: the wiring reads the others
        table, sweep_id = kinds.anatomy_layer(model, store, chosen, active, progress)
except NeurolabError as error:
    st.error(str(error))
    st.stop()

prompts = store.cached_prompts(sweep_id)
complete = is_complete(Operands.from_prompts(prompts), max_op)
st.caption(f"{len(table)} neurons of layer {layer} on the {op} grid ({len(prompts):,} prompts{condition}; "
           + ("complete grid" if complete else "incomplete grid: spectra from group means, no 2-D DFT") + ").")

# -- the current neuron --
labels = list(table["label"])
if st.session_state.get(state.NEURON) not in labels:
    st.session_state[state.NEURON] = table.loc[table["direct_effect"].abs().idxmax(), "label"]


def _open(to_layer: int, to_neuron: int) -> None:
    """A linked neuron becomes the current one (its layer too)."""
    state.put(state.LAYER, to_layer)
    state.put(state.NEURON, neuron_label(to_layer, to_neuron))


@st.cache_data(max_entries=256, show_spinner=False)
def _connections(_model: LoadedModel, _store: Store, fingerprint: str, store_path: str, sweep: int, at_layer: int,
                 neuron: int) -> pd.DataFrame:
    """A neuron's strongest inputs and outputs, once per (model, store, sweep, neuron): a revisited neuron is not
    wired again (each wiring reads every stored layer's maps)."""
    return stored_connections(_model, _store, sweep, at_layer, neuron, count=kinds.ANATOMY_LINKS)


VIEWS = ("Shape", "Inputs and outputs", "Helix fit")  # one drawn at a time: a neuron change redraws one view


@st.fragment
def neuron_view() -> None:
    """The current neuron: choosing another reruns only this part (the layer's chart and table below stay)."""
    st.selectbox("Neuron", labels, key=state.NEURON, help="the layer's neurons; select a row of the table below too")
    if st.session_state[state.LAYER] != layer:  # a linked neuron of another layer: the whole page follows it
        st.rerun(scope="app")
    state.publish()  # this part reruns alone: the URL follows the neuron here
    one = {"op": op, "max_op": max_op, "template": template_name, "neuron": st.session_state[state.NEURON]}
    anatomy = kinds.anatomy_in(store, table, sweep_id, one["neuron"], max_op)
    row, operands = anatomy.row, anatomy.operands
    _, neuron = parse_neuron_label(st.session_state[state.NEURON])

    shape_text = row["shape"] + (f" ({row['lookup_key']} digits)" if row["lookup_key"] else "") + (
        f" (mod {int(row['modulus'])})" if row["modulus"] else "")
    left, right = st.columns(2)
    left.markdown(f"**Shape**: {shape_text}  \ninteraction share {row['interaction']:.2f} · adjR² r {row['adj[r]']:.2f}"
                  f" · ones lookup {row['adj[ones lookup]']:.2f} · tens lookup {row['adj[tens lookup]']:.2f} · "
                  f"best r mod {int(row['best_mod'])} {row['best_mod_adj']:.2f} · active share "
                  f"{row['active_share']:.2f} · direct effect {row['direct_effect']:+.3f}")
    right.markdown(f"**The paper's labels**: {row['heuristics'] or 'none (classify on the Heuristic Atlas page)'}")
    view, pane = open_view(VIEWS, "anatomy_view")
    with pane:
        if view == "Shape":
            export.chart(kinds.decomposition_export(model, one, active, anatomy), key="anatomy_decomposition")
            export.chart(kinds.spectrum_export(model, one, active, anatomy), key="anatomy_spectrum")
        elif view == "Inputs and outputs":
            wiring(one, layer, neuron, operands)
        elif st.toggle("Helix fit of the pre-activation (one pass over the grid, then cached)",
                       key="anatomy_fit_neuron"):
            with st.spinner("fitting ..."):
                frame = neuron_helix(model, store, grid, layer, neuron, active)
            export.chart(kinds.helix_export(model, one, active, frame), key="anatomy_helix")
            if "gate" in set(frame["point"]):
                export.chart(kinds.signs_export(model, one, active, frame), key="anatomy_signs")


def wiring(one: dict, at_layer: int, neuron: int, operands: Operands) -> None:
    """The neuron's strongest inputs and outputs, each a thumbnail of its map with a button that opens it."""
    st.caption("Virtual weights through the residual stream only (attention between positions and the norm's "
               "division left out), weighted by co-activation over the grid: TWERA = V·E[a_i a_j]/E[a_j].")
    links = _connections(model, store, model.fingerprint, str(store.path), sweep_id, at_layer, neuron)
    if links.empty:
        st.caption("No linked neuron is active on at least 10 prompts in the stored layers.")
    for direction, part in links.groupby("direction", sort=False):
        st.markdown(f"**{direction}s**")
        columns = st.columns(max(len(part), 1))
        for column, link in zip(columns, part.itertuples()):
            values, _ = store.neuron_map(sweep_id, int(link.layer), int(link.neuron))
            with column:
                export.chart(kinds.link_export(model, {**one, "link": link.label}, active, link, values, operands),
                             key=f"anatomy_thumb_{link.label}")
            column.button(f"Open {link.label}", key=f"anatomy_open_{link.label}", on_click=_open,
                          args=(int(link.layer), int(link.neuron)))


neuron_view()

# -- the layer --
st.subheader(f"Layer {layer}")
shapes = kinds.shapes_export(model, chosen, active, table)
export.chart(shapes, key="anatomy_shapes")
shown = ["label", "shape", "heuristic", "interaction", "adj[r]", "adj[ones lookup]", "adj[tens lookup]", "best_mod",
         "best_mod_adj", "mod_auroc", "active_share", "direct_effect"]


def _picked() -> None:
    """A row selected in the table becomes the current neuron (only when the selection changes: a neuron chosen
    above afterwards is not taken back)."""
    rows = st.session_state["anatomy_table"].selection.rows
    if rows:
        state.put(state.NEURON, labels[rows[0]])


export.table(table[shown].round(3), "anatomy_table", f"{shapes.stem}-neurons", shapes.provenance, on_select=_picked,
             selection_mode="single-row")

a, b = st.columns(2)
with a:
    count = st.number_input("Top neurons to patch to their fits", 1, model.d_mlp, 20, key="anatomy_top_n")
    if st.toggle("Fit the layer and patch the fit (a pass over the grid, then the accuracy under the patch)",
                 key="anatomy_fit_layer"):
        fits = helix_fits(model, store, grid, layer, table["neuron"].tolist(), active)
        with progress_bar("patch the fit", "steps") as progress:
            patched = patch_the_fit(model, store, grid, layer, int(count), active, progress)
        merged = kinds.fraction_table(table, fits)
        st.caption(f"NRMSE best {merged['nrmse'].min():.3f}, median {np.median(merged['nrmse']):.3f}")
        export.chart(kinds.fraction_export(model, chosen, active, merged), key="anatomy_fraction")
        export.chart(kinds.patch_export(model, {**chosen, "count": int(count)}, active, patched), key="anatomy_patch")
with b:
    if st.toggle("Method agreement (exact activation patching: a forward pass per neuron and prompt)",
                 key="anatomy_agreement"):
        agreed = {**chosen, "count": int(count)}
        with progress_bar("activation patching", "neurons") as progress:
            scores = kinds.agreement_scores(model, store, agreed, active, progress)
        agreement = kinds.agreement_export(model, agreed, active, scores)
        export.table(agreement_summary(scores, int(count)).round(3), "anatomy_agreement_table",
                     f"{agreement.stem}-summary", agreement.provenance)
        export.chart(agreement, key="anatomy_agreement_scatter")
