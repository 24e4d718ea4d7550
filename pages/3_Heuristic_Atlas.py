"""Every classified neuron of the model: filter, sort, search, and open one on the Operand Grid."""

import pandas as pd
import streamlit as st

from neurolab.analysis.atlas import search_hint
from neurolab.analysis.classification import MAP_MODES, ClassifySettings, classify_operator
from neurolab.analysis.significance import FDR
from neurolab.anatomy.agreement import agreement_summary
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.export.provenance import Provenance
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS
from neurolab.tasks.grid import TEMPLATES
from pages import active_intervention, model_sidebar, pick_neuron, progress_bar, shared_store, state
from pages.common import export

st.set_page_config(page_title="neurolab · heuristic atlas", page_icon="🧮", layout="wide")
st.title("Heuristic Atlas")
model = model_sidebar()
store = shared_store()
active = active_intervention()  # classifications are made and shown under it (each is stored per intervention)
condition = f" under {active.describe()}" if active is not None else ""
#: the table's columns in reading order: the raw score beside its significance (p, q at the FDR, significant)
SHOWN = ["op", "label", "heuristic", "score", "base_rate", "lift", "p_value", "q_value", "significant", "grp",
         "direct", "side", "importance_rank", "layer", "neuron", "maps", "template", "max_op", "intervention", "params"]


@st.cache_data(max_entries=16, show_spinner=False)
def classified(store_path: str, fingerprint: str, runs: tuple, condition_key: str | None, _model, _active
               ) -> pd.DataFrame:
    """The Atlas' rows with their p- and q-values (~0.3 s on a big store), computed once per store, model,
    intervention and state of the store's classification runs (``runs``: their count and the latest's time, so a
    new classification refreshes it)."""
    return kinds.atlas_rows(shared_store(), _model, _active)


with st.expander("Classify an operator", expanded=False):
    c1, c2, c3, c4, c5 = st.columns(5)
    op = c1.selectbox("Operator", OPERATORS, key=state.OP)
    max_op = c2.number_input("max_op", 2, model.max_single_token + 1, key=state.MAX_OP)
    maps = c3.selectbox("Maps", MAP_MODES, index=MAP_MODES.index("hybrid"), key="atlas_maps",
                        help="hybrid: result heuristics judged on KV maps, operand heuristics on K maps (the paper's)")
    top_n = c4.number_input("Top neurons per layer", 1, model.d_mlp, min(200, model.d_mlp), key="atlas_top_n")
    threshold = c5.slider("Threshold", 0.3, 1.0, 0.6, 0.05, key="atlas_threshold")
    if st.button("Classify", key="atlas_classify"):
        with progress_bar("classifying") as progress:
            result = classify_operator(
                model, store, op, int(max_op), TEMPLATES["plain"],
                ClassifySettings(maps=maps, top_n=int(top_n), threshold=float(threshold)), intervention=active,
                progress=progress)
        st.success(f"{op}: layers {result.layers} classified (first heuristics layer {result.first_layer}).")
        run = Provenance.of("classification", model, {"op": op, "max_op": int(max_op), "template": "plain"}, active,
                            {"maps": maps, "top_n": int(top_n), "threshold": float(threshold)})
        export.table(result.coverage(), "atlas_coverage", f"classification-coverage-{OP_NAMES[op]}", run)
        st.caption("Per-layer evidence for the first heuristics layer (how much the MLP output promotes the answer):")
        export.table(result.evidence, "atlas_evidence", f"classification-evidence-{OP_NAMES[op]}", run)

frame = classified(str(store.path), model.fingerprint, store.classification_state(),
                   active.key if active else None, model, active)
if frame.empty:
    st.info(f"Nothing classified for this model{condition} yet: open 'Classify an operator' above"
            + (", or run `python -m neurolab classify --op +` and reload." if active is None else "."))
    st.stop()
if active is not None:
    st.caption(f"Classifications made{condition}; turn it off to see the clean model's.")

f1, f2, f3, f4 = st.columns(4)
ops = f1.multiselect("Operators", sorted(frame["op"].unique()), key="atlas_f_ops")
layers = f2.multiselect("Layers", sorted(frame["layer"].unique()), key="atlas_f_layers")
groups = f3.multiselect("Groups", sorted(frame["grp"].unique()), key="atlas_f_groups")
kind = f4.radio("Kind", ["all", "direct", "indirect"], horizontal=True, key="atlas_f_kind")
s1, s2, s3 = st.columns([2, 1, 1])
query = s1.text_input("Search heuristics", placeholder="result 0 mod 10, op1 range 100-150, same operand",
                      key="atlas_search")
min_score = s2.slider("Minimum score", 0.0, 1.0, 0.6, 0.05, key="atlas_min_score")
min_lift = s3.number_input("Minimum lift", 0.0, 100.0, 1.0, 0.5, key="atlas_min_lift",
                           help="score / base rate: how far above chance the match is")

chosen = {"ops": ops, "layers": layers, "groups": groups, "kind": kind, "query": query, "min_score": min_score,
          "min_lift": min_lift}
view = kinds.atlas_view(frame, chosen)

neurons = view[["op", "layer", "neuron"]].drop_duplicates().shape[0]
significant = view[view["significant"].astype(bool)]
st.caption(f"{len(view):,} matches over {neurons:,} neurons; significant at FDR {FDR} (hypergeometric null, "
           f"Benjamini-Hochberg over each classification run): {len(significant):,} matches over "
           f"{significant[['op', 'layer', 'neuron']].drop_duplicates().shape[0]:,} neurons.")
if view.empty and query.strip():
    st.info(search_hint(frame, query))
counted = kinds.atlas_export(model, chosen, active, view)
export.chart(counted, "atlas_counts")
event = export.table(view, "atlas_table", "atlas-neurons", counted.provenance, on_select="rerun",
                     selection_mode="single-row", column_order=[c for c in SHOWN if c in view])
if not view.empty:
    neurons = view.drop_duplicates(["op", "layer", "neuron"])
    first = neurons.iloc[0]

    def neuron_graph() -> dict:
        """The filtered neurons of the first operator in the view, on its classification grid."""
        from neurolab.export.graph import neuron_graph

        part = neurons[(neurons["op"] == first["op"]) & (neurons["max_op"] == first["max_op"])
                       & (neurons["template"] == first["template"])]
        template = next((t for t in TEMPLATES.values() if t.key == first["template"]), TEMPLATES["plain"])
        return neuron_graph(model, store, list(part["label"]), first["op"], int(first["max_op"]), template, active)

    export.graph(neuron_graph, f"atlas-neurons-{OP_NAMES[first['op']]}.graph.json", "atlas_graph",
                 f"The filtered {first['op']} neurons as a graph (JSON)")
rows = event.selection.rows if event is not None else []
if rows:
    row = view.iloc[rows[0]]
    st.button(f"Pick {row['label']} for the Ablation Lab", key="atlas_pick", on_click=pick_neuron,
              args=(row["label"],))
    if st.button(f"Open {row['label']} ({row['op']}) on the Operand Grid", key="atlas_open"):
        st.session_state.update({
            state.OP: row["op"], state.MAX_OP: int(row["max_op"]), state.NEURON: row["label"],
            state.LAYER: int(row["layer"]),
            state.TEMPLATE: next((n for n, t in TEMPLATES.items() if t.key == row["template"]), "plain"),
        })
        st.switch_page("pages/2_Operand_Grid.py")

st.subheader("Method agreement beside the ranking")
st.caption("The Atlas ranks a layer's neurons by attribution patching (the paper's importance). Exact activation "
           "patching (a forward pass per neuron and prompt pair) on the same pairs says whether that ranking holds: "
           "Spearman's rho over the layer and over both methods' top k, and the overlap of the two top-k sets.")
if st.session_state.get(state.LAYER) not in range(model.n_layers):
    st.session_state[state.LAYER] = model.n_layers - 1
a1, a2, a3 = st.columns([1, 1, 2])
agree_layer = a1.selectbox("Layer", list(range(model.n_layers)), key=state.LAYER)
top_k = int(a2.number_input("Top k", 1, model.d_mlp, min(20, model.d_mlp), key="atlas_agree_k"))
agreed = {"op": op, "max_op": int(max_op), "template": "plain", "layer": agree_layer, "count": top_k}
asked = st.session_state.setdefault("atlas_agreement_asked", set())
wanted = (op, int(max_op), agree_layer, active.key if active else None)
if a3.button(f"Compare the methods on layer {agree_layer} of the {op} grid (max_op {int(max_op)}){condition}",
             key="atlas_agreement"):
    asked.add(wanted)
if wanted in asked:
    try:
        with progress_bar("activation patching", "neurons") as progress:
            scores = kinds.agreement_scores(model, store, agreed, active, progress)  # cached in the store
    except NeurolabError as error:
        st.error(str(error))
        st.stop()
    agreement = kinds.agreement_export(model, agreed, active, scores)
    export.table(agreement_summary(scores, top_k).round(3), "atlas_agreement_summary", f"{agreement.stem}-summary",
                 agreement.provenance)
    left, right = st.columns(2)
    with left:
        export.chart(agreement, key="atlas_agreement_scatter")
    ranked = scores.assign(label=[f"L{agree_layer}N{n}" for n in scores["neuron"]],
                           attribution_rank=scores["attribution"].rank(ascending=False, method="min").astype(int),
                           activation_rank=scores["activation"].rank(ascending=False, method="min").astype(int))
    here = frame[(frame["op"] == op) & (frame["layer"] == agree_layer) & (frame["max_op"] == int(max_op))]
    named = here.groupby("label")["heuristic"].agg(lambda h: ", ".join(dict.fromkeys(h)))
    ranked = ranked.assign(heuristics=ranked["label"].map(named).fillna("")).sort_values("attribution_rank")
    with right:
        export.table(ranked.head(top_k)[["label", "attribution_rank", "activation_rank", "attribution", "activation",
                                         "heuristics"]], "atlas_agreement_ranking", f"{agreement.stem}-ranking",
                     agreement.provenance)
