"""MathNeuro: find the math-specific weights with forward passes only, then prune or scale them and compare."""

import pandas as pd
import streamlit as st

from neurolab.analysis.atlas import atlas
from neurolab.analysis.mathneuro import (
    DEFAULT_KS,
    by_matrix,
    edit,
    math_specific,
    scores_for,
    stored_accuracy,
    summary,
)
from neurolab.analysis.mathneuro_claims import (
    CONDITIONS,
    best_scaling,
    frontier,
    frontier_best,
    parse_conditions,
    scaling_study,
    single_sample_study,
)
from neurolab.analysis.mathneuro_overlap import ablation_vs_pruning, neuron_overlap, overlap_by_layer
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.export.bundle import Export
from neurolab.export.provenance import Provenance
from neurolab.keys import DATA_DIGEST_SIZE, digest, json_digest
from neurolab.tasks.arithmetic import OP_NAMES
from neurolab.viz.mathneuro import frontier_figure, scaling_figure
from pages import ACTIVE_KEY, model_sidebar, progress_bar, shared_store
from pages.common import export

st.set_page_config(page_title="neurolab · MathNeuro", page_icon="🧮", layout="wide")
st.title("MathNeuro")
st.caption("Importance of a weight = |W| x the L2 norm of its input feature over a sample, summed over samples; "
           "math-specific = top-K on math data and not top-K on non-math data, per weight matrix.")
model = model_sidebar()
store = shared_store()


# What a rerun would otherwise recompute from the (cached) scores: keyed by the model and the samples' spec, the
# tensors passed alongside, unhashed (the leading underscore), since the key names everything they depend on.
@st.cache_data(max_entries=16, show_spinner=False)
def k_summary(fingerprint: str, samples_key: str, _math: dict, _general: dict) -> pd.DataFrame:
    return summary(_math, _general, DEFAULT_KS)


@st.cache_resource(max_entries=8, show_spinner=False)
def k_masks(fingerprint: str, samples_key: str, k: float, k_general: float | None, _model, _math: dict,
            _general: dict):
    specific = math_specific(_math, _general, k, k_general)
    return specific, by_matrix(_model, specific)


@st.cache_resource(max_entries=8, show_spinner=False)
def k_edit(fingerprint: str, samples_key: str, k: float, k_general: float | None, factor: float, _specific: dict):
    return edit(_specific, factor, f"MathNeuro K={k:g} x{factor:g}", "mathneuro")


def saved_upload(upload) -> str | None:
    """An uploaded file kept beside the store under its content hash (so results key by its content)."""
    if upload is None:
        return None
    data = upload.getvalue()
    suffix = "." + upload.name.rsplit(".", 1)[-1].lower()
    path = store.values_dir / "uploads" / (digest(data, size=DATA_DIGEST_SIZE) + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


for key, default in {"mn_samples": 100, "mn_seed": 0, "mn_k": 0.01, "mn_factor": 1.1}.items():
    st.session_state.setdefault(key, default)  # remembered across pages (pages/state.py), so set once, here
d1, d2, d3, d4 = st.columns(4)
source = d1.radio("Data", ["built-in", "files"], key="mn_source",
                  help="built-in: arithmetic prompts with answers, and the embedded model's language task")
single = d2.checkbox("Single sample", key="mn_single", help="one math and one non-math sample (the paper: enough)")
count = int(d3.number_input("Samples per set", 1, 100_000, key="mn_samples", disabled=single))
seed = int(d4.number_input("Seed", 0, 10_000, key="mn_seed"))
math_file = general_file = None
if source == "files":
    f1, f2 = st.columns(2)
    math_file = saved_upload(f1.file_uploader("Math data (CSV/JSONL: question+answer, or text)", ["csv", "jsonl"],
                                              key="mn_math_file"))
    general_file = saved_upload(f2.file_uploader("Non-math data (CSV/JSONL: text)", ["csv", "jsonl"],
                                                 key="mn_general_file"))
    if math_file is None or general_file is None:
        st.info("Upload both files, or use the built-in data.")
        st.stop()
data = {"samples": count, "seed": seed, "single": single, "math": math_file, "general": general_file}
try:
    samples = kinds.samples_of(model, kinds.selection("mathneuro-matrices", data))
except NeurolabError as error:
    st.error(str(error))
    st.stop()
st.caption(f"{len(samples.math)} math samples (e.g. `{samples.math[0]}`), {len(samples.general)} non-math "
           f"(e.g. `{samples.general[0]}`).")

if not st.toggle("Score the weights", key="mn_score", help="two forward passes over the samples; cached"):
    st.stop()
with progress_bar("scoring", "samples") as progress:
    math_scores, general_scores = scores_for(model, samples, store, progress=progress)
samples_key = json_digest(samples.spec, size=DATA_DIGEST_SIZE)
st.subheader("Math-specific weights per K")
scored = Provenance.of("mathneuro-summary", model, data, params={"samples": samples.spec, "ks": list(DEFAULT_KS)})
export.table(k_summary(model.fingerprint, samples_key, math_scores, general_scores), "mn_summary",
             "mathneuro-summary", scored)

kc1, kc2 = st.columns(2)
k = kc1.select_slider("K", options=list(DEFAULT_KS), key="mn_k")
kg_choice = kc2.select_slider("K-general (non-math top-K)", options=["= K", *DEFAULT_KS], key="mn_k_general",
                              help="the fraction of non-math top weights excluded; '= K' as published, a larger one "
                                   "protects more non-math weights")
k_general = None if kg_choice == "= K" else float(kg_choice)
specific, table = k_masks(model.fingerprint, samples_key, k, k_general, model, math_scores, general_scores)
export.chart(kinds.matrices_export(model, {**data, "k": k, "k_general": k_general}, table, samples), "mn_matrices")

st.subheader("Prune or scale them")
e1, e2, e3 = st.columns(3)
how = e1.radio("Edit", ["prune (x0)", "scale"], horizontal=True, key="mn_how")
factor = 0.0 if how.startswith("prune") else float(e2.number_input("Factor", 0.0, 10.0, step=0.05, key="mn_factor"))
edited = k_edit(model.fingerprint, samples_key, k, k_general, factor, specific)
live = e3.toggle("Evaluate each edit", key="mn_live",
                 help="accuracy over every operator's full grid and the held-out non-math facts as K or the factor "
                      "moves "
                      "(~2-3 s on a CPU for an edit not evaluated before; stored)")
clean, after = stored_accuracy(model, store, compute=False), stored_accuracy(model, store, edited, compute=False)
if None in (clean, after) and (live or st.button(f"Evaluate x{factor:g} at K={k:g}", key="mn_evaluate")):
    with st.spinner("Accuracy over every operator's full grid and the non-math task ..."):
        clean, after = stored_accuracy(model, store), stored_accuracy(model, store, edited)
if None in (clean, after):
    st.caption("Not evaluated yet: the edit's accuracy is computed when asked (the button, or 'Evaluate each edit').")
else:
    export.table(pd.DataFrame([{"model": "clean", **clean}, {"model": f"x{factor:g} at K={k:g}", **after}]),
                 "mn_accuracy", f"mathneuro-accuracy-k{k:g}-x{factor:g}",
                 Provenance.of("mathneuro-accuracy", model, {**data, "k": k, "factor": factor}, edited))
    a1, a2 = st.columns(2)
    a1.metric("Math accuracy (mean of + - * /)", f"{after['math']:.3f}", f"{after['math'] - clean['math']:+.3f}")
    a2.metric("Non-math accuracy", f"{after['nonmath']:.3f}", f"{after['nonmath'] - clean['nonmath']:+.3f}")
st.session_state["_mn_edited"] = edited  # what the toggle applies (its callback runs before the next rerun)


def _applied() -> None:
    """Apply or remove the edit before the page reruns, so the sidebar, drawn first, is right at once."""
    edited = st.session_state["_mn_edited"]
    if st.session_state["mn_apply"]:
        shared_store().save_intervention(edited.to_json(), edited.tensors())
        st.session_state[ACTIVE_KEY] = edited.key
    elif st.session_state.get(ACTIVE_KEY) == edited.key:
        st.session_state[ACTIVE_KEY] = None


active = st.toggle("Apply this edit on every page", key="mn_apply", on_change=_applied,
                   help="the edited model is marked in the sidebar of every page until turned off")
if active and st.session_state.get(ACTIVE_KEY) != edited.key:  # K or the factor moved while applied: it follows
    store.save_intervention(edited.to_json(), edited.tensors())
    st.session_state[ACTIVE_KEY] = edited.key
    st.rerun()

st.subheader("K sweep with the paper's baselines")
st.caption("random: as many random weights per matrix (seeded); Wanda: top-K on math data without subtracting "
           "the non-math top-K.")
ks = st.multiselect("K values", list(DEFAULT_KS), [0.001, 0.01, 0.025, 0.05], key="mn_ks")
if st.button("Evaluate these K (cached)", key="mn_sweep", disabled=not ks):
    with progress_bar("scoring", "samples") as progress:
        swept = kinds.build("mathneuro", model, store, {**data, "ks": ks, "factor": factor, "k_general": k_general},
                            progress=progress)
    export.chart(swept, "mn_sweep_chart")
    export.table(swept.data, "mn_sweep_table", swept.stem, swept.provenance)

st.subheader("The claims, where they can fail")
st.caption("Non-math accuracy here is measured on held-out facts, never used as non-math samples. Math accuracy on a "
           "seeded subset of each grid; every evaluation is stored, so a rerun computes nothing.")
claim = st.radio("Study", ["frontier", "scaling", "single sample"], horizontal=True, key="mn_study")
c1, c2, c3 = st.columns(3)
if claim == "frontier":
    f_ks = c1.multiselect("K values", [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08], [0.01, 0.03, 0.05],
                          key="mn_frontier_ks")
    f_kgs = c2.multiselect("K-general values", ["= K", 0.05, 0.08, 0.1], ["= K", 0.08], key="mn_frontier_kgs")
    f_prompts = int(c3.number_input("Prompts per operator grid", 50, 10_000, 500, step=50, key="mn_frontier_prompts"))
    if st.button("Run the frontier (cached)", key="mn_frontier_run", disabled=not (f_ks and f_kgs)):
        kgs = [None if v == "= K" else float(v) for v in f_kgs]
        with progress_bar("frontier", "edits") as progress:
            front = frontier(model, samples, sorted(f_ks), kgs, store, f_prompts, progress=progress)
        best = frontier_best(front)
        prov = Provenance.of("mathneuro-frontier", model, {**data, "ks": f_ks, "k_generals": f_kgs},
                             params={"samples": samples.spec, "prompts": f_prompts})
        export.chart(Export("mathneuro-frontier", prov, front, frontier_figure(front)), "mn_frontier_chart")
        if best is not None:
            st.caption(f"Largest math drop with non-math within 0.05: K={best['k']:g}, K-general="
                       f"{best['k_general']:g}: math {best['math_drop']:+.3f}, non-math {best['nonmath_change']:+.3f}.")
        export.table(front, "mn_frontier_table", "mathneuro-frontier", prov)
elif claim == "scaling":
    s_conditions = c1.multiselect("Conditions", list(CONDITIONS), ["out-of-range", "step-01000", "fewshot"],
                                  key="mn_scaling_conditions")
    s_prompts = int(c2.number_input("Prompts per condition", 100, 20_000, 2000, step=100, key="mn_scaling_prompts"))
    s_k = float(c3.select_slider("K", options=list(DEFAULT_KS), value=0.01, key="mn_scaling_k"))
    if st.button("Run the scaling study (cached)", key="mn_scaling_run", disabled=not s_conditions):
        conds = parse_conditions(",".join(s_conditions), s_prompts)
        with progress_bar("scaling", "edits") as progress:
            scaled = scaling_study(model, conds, store, s_k, k_general, progress=progress)
        prov = Provenance.of("mathneuro-scaling", model, {"conditions": s_conditions, "k": s_k,
                                                          "k_general": k_general}, params={"prompts": s_prompts})
        export.chart(Export("mathneuro-scaling", prov, scaled, scaling_figure(scaled)), "mn_scaling_chart")
        export.table(best_scaling(scaled), "mn_scaling_best", "mathneuro-scaling-best", prov)
else:
    g_pairs = int(c1.number_input("Single-sample pairs", 1, 100, 20, key="mn_single_pairs"))
    g_prompts = int(c2.number_input("Prompts per operator grid", 50, 10_000, 500, step=50, key="mn_single_prompts"))
    if st.button("Run the single-sample study (cached)", key="mn_single_run"):
        with progress_bar("single samples", "masks") as progress:
            per_pair, robust = single_sample_study(model, store, g_pairs, k, k_general, count, g_prompts,
                                                   progress=progress)
        prov = Provenance.of("mathneuro-single", model, {"pairs": g_pairs, "k": k, "k_general": k_general},
                             params={"prompts": g_prompts, "reference_samples": count})
        export.table(robust, "mn_single_summary", "mathneuro-single-summary", prov)
        export.table(per_pair, "mn_single_pairs", "mathneuro-single-pairs", prov)

st.subheader("Overlap with the heuristic neurons")
o1, o2 = st.columns(2)
op = o1.selectbox("Operator whose classification to compare with", ["+", "-", "*", "/"], key="mn_overlap_op")
labelled = atlas(store, model.fingerprint)
labelled = labelled[(labelled["op"] == op) & (labelled["intervention"] == "none")]
if labelled.empty:
    st.info(f"Nothing is classified for {op} yet: classify it on the Heuristic Atlas page first.")
    st.stop()
pairs = sorted({(int(r.layer), int(r.neuron)) for r in labelled.itertuples()})
overlap = Provenance.of("mathneuro-overlap", model, {**data, "k": k, "op": op}, params={"neurons": len(pairs)})
export.table(overlap_by_layer(neuron_overlap(model, specific, pairs)), "mn_overlap",
             f"mathneuro-overlap-k{k:g}-{OP_NAMES[op]}", overlap)
st.caption("share: of the math-specific weights in a layer's MLP matrices, those in the rows/columns of labelled "
           "neurons; chance: the fraction of the matrix those neurons occupy; lift = share / chance.")
if o2.button("Ablate the neurons vs prune the weights, on the grid", key="mn_overlap_run"):
    with progress_bar("ablating and pruning") as progress:
        comparison = ablation_vs_pruning(model, store, op, specific, pairs, int(labelled["max_op"].iloc[0]),
                                         progress=progress)
    export.table(comparison, "mn_comparison", f"mathneuro-ablation-vs-pruning-k{k:g}-{OP_NAMES[op]}", overlap)
