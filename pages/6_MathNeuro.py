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
from neurolab.analysis.mathneuro_overlap import ablation_vs_pruning, neuron_overlap, overlap_by_layer
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.export.provenance import Provenance
from neurolab.keys import DATA_DIGEST_SIZE, digest, json_digest
from neurolab.tasks.arithmetic import OP_NAMES
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
def k_masks(fingerprint: str, samples_key: str, k: float, _model, _math: dict, _general: dict):
    specific = math_specific(_math, _general, k)
    return specific, by_matrix(_model, specific)


@st.cache_resource(max_entries=8, show_spinner=False)
def k_edit(fingerprint: str, samples_key: str, k: float, factor: float, _specific: dict):
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

k = st.select_slider("K", options=list(DEFAULT_KS), key="mn_k")
specific, table = k_masks(model.fingerprint, samples_key, k, model, math_scores, general_scores)
export.chart(kinds.matrices_export(model, {**data, "k": k}, table, samples), "mn_matrices")

st.subheader("Prune or scale them")
e1, e2, e3 = st.columns(3)
how = e1.radio("Edit", ["prune (x0)", "scale"], horizontal=True, key="mn_how")
factor = 0.0 if how.startswith("prune") else float(e2.number_input("Factor", 0.0, 10.0, step=0.05, key="mn_factor"))
edited = k_edit(model.fingerprint, samples_key, k, factor, specific)
live = e3.toggle("Evaluate each edit", key="mn_live",
                 help="accuracy over every operator's full grid and the non-math task as K or the factor moves "
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
        swept = kinds.build("mathneuro", model, store, {**data, "ks": ks, "factor": factor}, progress=progress)
    export.chart(swept, "mn_sweep_chart")
    export.table(swept.data, "mn_sweep_table", swept.stem, swept.provenance)

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
