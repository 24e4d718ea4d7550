"""The causal experiments of the paper, each computed on demand and cached: circuit patching, knockouts, failures."""

import streamlit as st

from neurolab.analysis.circuit import RULES, top_components
from neurolab.analysis.failures import failure_summary
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS
from pages import active_intervention, model_sidebar, progress_bar, shared_store, state
from pages.common import export

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


exports, lines = [], []  # what the report bundles: the experiments shown, and their key numbers
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
                patched = kinds.build("patching", model, store, {"op": op, "max_op": max_op, "rule": asked["rule"],
                                                                 "pairs": asked["pairs"], "seed": asked["seed"]},
                                      active, update)
        except NeurolabError as error:
            st.error(str(error))
            st.stop()
        st.caption(f"Counterfactual {asked['rule']}, {asked['pairs']} pairs, seed {asked['seed']}.")
        export.chart(patched, "circuit_heatmap")
        best = top_components(patched.data, 10)
        export.table(best[["component", "position", "token", "fraction", "logit_diff", "pairs"]], "circuit_top",
                     f"{patched.stem}-top", patched.provenance)
        exports.append(patched)
        lines.append(f"Patching ({asked['rule']}, {asked['pairs']} pairs): largest effects "
                     + ", ".join(f"{r.component} at {r.position} {r.token!r} ({r.fraction:+.3f})"
                                 for r in best.head(3).itertuples()) + ".")
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
    chosen = {"op": op, "max_op": max_op, "top": top}
    if shown("heuristic knockout") is not None:
        with progress_bar("heuristic knockout") as update:
            knocked = kinds.build("knockout", model, store, chosen, active, update)
        export.chart(knocked, "knockout_heuristic_chart")
        export.table(knocked.data, "knockout_heuristic_table", knocked.stem, knocked.provenance)
        exports.append(knocked)
        lines.append(f"Heuristic knockout: {len(knocked.data)} heuristics with enough neurons; mean accuracy on the "
                     f"prompts they apply to {knocked.data['related_accuracy'].mean():.3f}, on other prompts "
                     f"{knocked.data['unrelated_accuracy'].mean():.3f}." if len(knocked.data) else
                     "Heuristic knockout: no heuristic has enough neurons.")
    if shown("prompt knockout") is not None:
        with progress_bar("prompt knockout") as update:
            curves = kinds.build("prompt-knockout", model, store, chosen, active, update)
        export.chart(curves, "knockout_prompt_chart")
        exports.append(curves)
        last = curves.data[curves.data["n"] == curves.data["n"].max()].set_index("arm")["accuracy"]
        lines.append(f"Prompt knockout at N = {curves.data['n'].max()}: accuracy "
                     + ", ".join(f"{arm} {value:.3f}" for arm, value in last.items()) + ".")

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
                failed = kinds.build("failures", model, store, {"op": op, "max_op": max_op, "top": top,
                                                                "eval_max_op": asked["eval_max_op"],
                                                                "count": asked["count"]}, active, update)
        except NeurolabError as error:
            st.error(str(error))
            st.stop()
        export.chart(failed, "failures_chart")
        counted = failure_summary(failed.data)
        export.table(counted, "failures_summary", f"{failed.stem}-summary", failed.provenance)
        exports.append(failed)
        lines.append("Failure analysis (max_op " + str(asked["eval_max_op"]) + "): " + "; ".join(
            f"{r.group}: {r.prompts} prompts, {r.should_fire:.1f} neurons should fire, {r.fire_and_should:.1f} do"
            for r in counted.itertuples()) + ".")

if exports:
    export.report(exports, f"circuit-{OP_NAMES[op]}-report", lambda: lines, "circuit_report",
                  "Report on these experiments (zip)")
