"""The causal experiments of the paper, each computed on demand and cached: circuit patching, knockouts, failures."""

import streamlit as st

from neurolab.analysis.circuit import RULES, circuit_effects, top_components
from neurolab.analysis.classification import ClassifySettings
from neurolab.analysis.failures import failure_analysis, failure_summary
from neurolab.analysis.knockout import heuristic_knockout, prompt_knockout
from neurolab.errors import NeurolabError
from neurolab.tasks.arithmetic import OPERATORS
from neurolab.viz.circuit import circuit_heatmap
from neurolab.viz.experiments import failure_figure, heuristic_knockout_figure, prompt_knockout_figure
from pages import active_intervention, model_sidebar, progress_bar, shared_store, state

st.set_page_config(page_title="neurolab · circuit", page_icon="🧮", layout="wide")
st.title("Circuit and causal checks")
model = model_sidebar()
store = shared_store()
active = active_intervention()

c1, c2, c3 = st.columns(3)
op = c1.selectbox("Operator", OPERATORS, key=state.OP)
max_op = int(c2.number_input("max_op", 2, model.max_single_token + 1, key=state.MAX_OP))
top = int(c3.number_input("Top neurons per layer (classification)", 1, model.d_mlp, min(200, model.d_mlp),
                          key="circuit_top_n"))
settings = ClassifySettings(top_n=top)
if active is not None:
    st.caption(f"Computed under the active ablation: {active.describe()}.")


#: the experiments asked for in this session, with the settings they were asked with: each stays on the page (read
#: back from the store's cache) until asked again with other settings
ran = st.session_state.setdefault("circuit_ran", {})


def ask(name: str, **settings) -> None:
    ran[name] = {"op": op, "max_op": max_op, "top": top, "active": active.key if active else None, **settings}


def shown(name: str) -> dict | None:
    """The settings ``name`` was asked with, if it was asked for this operator, grid and intervention."""
    found = ran.get(name)
    same = found and (found["op"], found["max_op"], found["top"], found["active"]) == (
        op, max_op, top, active.key if active else None)
    return found if same else None


patching, knockout, failures = st.tabs(["Circuit patching", "Knockouts", "Failure analysis"])

with patching:
    p1, p2, p3 = st.columns(3)
    rule = p1.selectbox("Counterfactual", RULES, key="circuit_rule",
                        help="op1: change op1 only; op2: change op2 only; both: another prompt of the grid")
    pairs = int(p2.number_input("Prompt pairs", 2, 500, 20, key="circuit_pairs"))
    seed = int(p3.number_input("Seed", 0, 10_000, 0, key="circuit_seed"))
    if st.button("Patch every MLP and head at every position", key="circuit_run"):
        ask("patching", rule=rule, pairs=pairs, seed=seed)
    if (asked := shown("patching")) is not None:
        try:
            with progress_bar("patching", "passes") as update:
                effects = circuit_effects(model, store, op, max_op, rule=asked["rule"], n=asked["pairs"],
                                          seed=asked["seed"], intervention=active, progress=update)
        except NeurolabError as error:
            st.error(str(error))
            st.stop()
        st.caption(f"Counterfactual {asked['rule']}, {asked['pairs']} pairs, seed {asked['seed']}.")
        st.plotly_chart(circuit_heatmap(effects), key="circuit_heatmap")
        st.dataframe(top_components(effects, 10)[["component", "position", "token", "fraction", "logit_diff", "pairs"]],
                     hide_index=True)
        st.caption("fraction: the share of the clean -> counterfactual swing of logit(r) - logit(r') that patching "
                   "this one component achieves (1: as if the prompt were the counterfactual); logit_diff: how far "
                   "it moves that difference, in logits. science.md's IE divides by p(r'), the counterfactual "
                   "answer's probability on the clean prompt, which is ~0 for a confident model, so its values "
                   "explode (1e16) without meaning more; it stays in the exported data (column `ie`), not here.")

with knockout:
    k1, k2 = st.columns(2)
    if k1.button("Heuristic knockout", key="knockout_heuristic",
                 help="per heuristic with >= 10 neurons: accuracy on prompts it applies to vs other correct prompts"):
        ask("heuristic knockout")
    if k2.button("Prompt knockout", key="knockout_prompt",
                 help="per correct prompt, N neurons per layer whose heuristics apply vs N random ones"):
        ask("prompt knockout")
    if shown("heuristic knockout") is not None:
        with progress_bar("heuristic knockout") as update:
            table = heuristic_knockout(model, store, op, max_op, settings=settings, progress=update,
                                       intervention=active)
        st.plotly_chart(heuristic_knockout_figure(table, op), key="knockout_heuristic_chart")
        st.dataframe(table, hide_index=True)
    if shown("prompt knockout") is not None:
        with progress_bar("prompt knockout") as update:
            curves = prompt_knockout(model, store, op, max_op, settings=settings, progress=update, intervention=active)
        st.plotly_chart(prompt_knockout_figure(curves, op), key="knockout_prompt_chart")

with failures:
    f1, f2 = st.columns(2)
    eval_max_op = int(f1.number_input("Grid where the model errs (max_op)", max_op + 1, model.max_single_token + 1,
                                      min(model.max_single_token + 1, max_op + 50), key="failures_max_op"))
    count = int(f2.number_input("Prompts per group", 5, 500, 50, key="failures_n"))
    if st.button("Compare correct and wrong prompts", key="failures_run"):
        ask("failures", eval_max_op=eval_max_op, count=count)
    if (asked := shown("failures")) is not None:
        try:
            with progress_bar("failure analysis") as update:
                frame = failure_analysis(model, store, op, max_op, asked["eval_max_op"], asked["count"],
                                         settings=settings, progress=update, intervention=active)
        except NeurolabError as error:
            st.error(str(error))
            st.stop()
        st.plotly_chart(failure_figure(frame, op), key="failures_chart")
        st.dataframe(failure_summary(frame), hide_index=True)
