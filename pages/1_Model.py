"""The chosen model: how neurolab maps it, its card and checkpoints, and its accuracy on demand."""

from pathlib import Path

import pandas as pd
import streamlit as st

from neurolab.analysis.evaluation import evaluate
from neurolab.export.provenance import Provenance
from pages import active_intervention, model_sidebar
from pages.common import export

st.set_page_config(page_title="neurolab · model", page_icon="🧮", layout="wide")
st.title("Model")
model = model_sidebar()

st.subheader("How neurolab sees it")
st.table(pd.DataFrame(list(model.describe().items()), columns=["", "value"]).set_index(""))

card = Path(model.source) / "README.md"
checkpoints = sorted(p.name for p in (Path(model.source) / "checkpoints").glob("step-*"))
if checkpoints:
    st.subheader("Training checkpoints")
    st.write(", ".join(checkpoints))

st.subheader("Accuracy")
sample = st.number_input("Prompts per operator (0 = all)", min_value=0, value=500, step=100, key="eval_sample")
active = active_intervention()
if st.button("Evaluate" + (f" under {active.describe()}" if active is not None else ""), key="evaluate"):
    with st.spinner("Evaluating on every operator and the non-math task ..."):
        result = evaluate(model, sample=sample or None, intervention=active)
    st.caption(f"Measured on {result.split}" + (f", under {active.describe()}." if active is not None else "."))
    export.table(pd.DataFrame(
        [{"task": k, "accuracy": s.accuracy, "correct": s.correct, "total": s.total}
         for k, s in result.scores.items()]
    ), "eval_table", "accuracy" + (f"-under-{active.key}" if active is not None else ""),
        Provenance.of("evaluation", model, {"sample": sample or None}, active, {"split": result.split}))

if card.exists():
    with st.expander("Model card", expanded=False):
        st.markdown(card.read_text())
