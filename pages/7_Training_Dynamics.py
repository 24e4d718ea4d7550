"""When heuristics are born: heuristic neurons over training checkpoints, under other templates, side by side."""

import streamlit as st

from neurolab.analysis.dynamics import DynamicsSettings, checkpoint_results, parse_series, run_series
from neurolab.analysis.neuron_maps import load_neuron_map
from neurolab.analysis.robustness import compare, template_robustness, templates_with
from neurolab.errors import NeurolabError
from neurolab.export import kinds
from neurolab.export.provenance import Provenance
from neurolab.models.adapters import neuron_label, parse_neuron_label
from neurolab.models.loading import load_model
from neurolab.tasks.arithmetic import OP_NAMES, OPERATORS
from pages import model_sidebar, progress_bar, shared_store, state
from pages.common import export

st.set_page_config(page_title="neurolab · training dynamics", page_icon="🧮", layout="wide")
st.title("Training dynamics")
model = model_sidebar()
store = shared_store()

c1, c2 = st.columns([1, 3])
op = c1.selectbox("Operator", OPERATORS, key=state.OP)
series_text = c2.text_input("Series", "embedded", key="dyn_series",
                            help="embedded (its 7 checkpoints + the final model), MODEL@rev1,rev2 (hub revisions, "
                                 "e.g. EleutherAI/pythia-70m@step1000,step143000) or folders DIR1,DIR2")
with st.expander("Settings", expanded=False):
    s1, s2, s3, s4 = st.columns(4)
    defaults = DynamicsSettings()
    try:
        settings = DynamicsSettings(
            max_op=int(s1.number_input("max_op", 2, 1000, defaults.max_op, key="dyn_max_op")),
            classify_top=int(s2.number_input("neurons classified per layer", 1, 100_000, defaults.classify_top,
                                             key="dyn_classify_top")),
            share_top=int(s3.number_input("shares over the top", 1, 100_000, defaults.share_top, key="dyn_share_top")),
            ablate_n=int(s4.number_input("neurons ablated", 1, 100_000, defaults.ablate_n, key="dyn_ablate_n")))
    except NeurolabError as error:
        st.error(str(error))
        st.stop()
layer = model.n_layers - 1 if settings.layers is None else settings.layers[-1]
#: the figure kinds' selection of this page (neurolab.export.kinds: dynamics, dynamics-map, robustness)
chosen_settings = {"op": op, "max_op": settings.max_op, "classify_top": settings.classify_top,
                   "share_top": settings.share_top, "ablate_n": settings.ablate_n}
st.caption(f"Classified: every neuron of layer {layer} (shares over its top {settings.share_top} by importance; the "
           f"top {settings.ablate_n} with a heuristic are ablated). Shares are shown raw and significant at FDR "
           f"{settings.alpha} (hypergeometric null, Benjamini-Hochberg over the run's (neuron, heuristic) pairs).")


def _series(compute: bool):
    series = parse_series(series_text)
    if compute:
        with progress_bar("checkpoints") as progress:
            return run_series(store, series, op, settings=settings, progress=progress)
    return run_series(store, series, op, settings=settings, compute=False)


def _neuron_input(key: str, default: str) -> tuple[int, int] | None:
    text = st.text_input("Neuron", default, key=key)
    try:
        return parse_neuron_label(text)
    except ValueError as error:
        st.error(str(error))
        return None


@st.fragment
def neuron_over_training(dynamics, table) -> None:
    """One neuron's map and heuristics at the chosen checkpoint; a fragment, so the slider reruns only this part
    (everything it shows is read from the store: nothing is computed on a move)."""
    st.subheader("One neuron over training")
    final = dynamics.matches[dynamics.matches["checkpoint"] == table["checkpoint"].iloc[-1]]
    default = neuron_label(int(final["layer"].iloc[0]), int(final["neuron"].iloc[0])) if len(final) else "L3N0"
    a, b = st.columns([1, 3])
    with a:
        chosen = _neuron_input("dyn_neuron", default)
    label = b.select_slider("Checkpoint", table["checkpoint"].tolist(), value=table["checkpoint"].iloc[-1],
                            key="dyn_checkpoint")
    if chosen is None:
        return
    row = table[table["checkpoint"] == label].iloc[0]
    heuristics = dynamics.neuron(*chosen)
    here = heuristics[heuristics["checkpoint"] == label]
    m1, m2 = st.columns([2, 1])
    values = {**chosen_settings, "series": series_text, "condition": f"checkpoint {label}",
              "neuron": neuron_label(*chosen)}
    shown = None
    try:
        nmap = load_neuron_map(store, int(row["sweep_id"]), *chosen)
        shown = kinds.dynamics_map_export(model, values, nmap)
        with m1:
            export.chart(shown, key="dyn_heatmap")
    except (NeurolabError, ValueError) as error:
        m1.info(f"{neuron_label(*chosen)} has no stored map at {label}: {error}")
    m2.markdown(f"**{neuron_label(*chosen)} at {label}**: {len(here)} heuristic(s), "
                f"{int(here['significant'].sum())} significant")
    with m2:
        export.table(here[["heuristic", "score", "base_rate", "q_value", "significant"]], "dyn_neuron_table",
                     f"{shown.stem}-heuristics" if shown else f"{neuron_label(*chosen)}-heuristics-{OP_NAMES[op]}",
                     shown.provenance if shown else None)
    m2.caption("Over the series: " + ", ".join(
        f"{c}: {int((heuristics['checkpoint'] == c).sum())}" for c in table["checkpoint"]))


over_training, templates_tab, compare_tab = st.tabs(["Over training", "Templates", "Compare"])

with over_training:
    try:
        cache_key = ("dynamics", series_text, op, settings)
        dynamics = st.session_state.get(cache_key) or _series(compute=False)
        if dynamics is None:
            st.info(f"The series {series_text!r} is not computed for {op} yet (the embedded `+` series takes ~3 "
                    "minutes on 2 cores; `python -m neurolab dynamics --series ... --op ...` does the same).")
            if st.button("Compute the series", key="dyn_compute"):
                dynamics = _series(compute=True)
        if dynamics is not None:
            st.session_state[cache_key] = dynamics
    except NeurolabError as error:
        st.error(str(error))
        dynamics = None
    if dynamics is not None:
        table = dynamics.table()
        left, right = st.columns(2)
        values = {**chosen_settings, "series": series_text}
        shown = {}
        for column, metric in ((left, "accuracy"), (right, "share"), (left, "ablation"), (right, "intersection")):
            with column:
                shown[metric] = kinds.dynamics_export(model, {**values, "metric": metric}, table)
                export.chart(shown[metric], key=f"dyn_{metric}")
        export.table(table.drop(columns=["fingerprint", "sweep_id"]), "dyn_table", f"dynamics-{OP_NAMES[op]}",
                     shown["accuracy"].provenance)
        neuron_over_training(dynamics, table)
with templates_tab:
    custom = st.text_input("Custom template", "Q: {op1} {op} {op2} =", key="dyn_custom")
    try:
        chosen_templates = templates_with(custom or None)
        cache_key = ("robustness", model.fingerprint, op, custom, settings)
        result = st.session_state.get(cache_key)
        if result is None and (all(checkpoint_results(model, store, op, t, settings, compute=False) is not None
                                   for t in chosen_templates.values())
                               or st.button("Compute the templates", key="dyn_templates")):
            with progress_bar("templates") as progress:
                result = template_robustness(model, store, op, chosen_templates, settings, progress)
            st.session_state[cache_key] = result
    except NeurolabError as error:
        st.error(str(error))
        result = None
    if result is None:
        st.info(f"{model.name}'s {op} neurons under {', '.join(chosen_templates)} are not computed yet.")
    else:
        survived = kinds.robustness_export(model, {**chosen_settings, "custom": custom}, result)
        survival = survived.data
        export.chart(survived, key="dyn_survival")
        export.table(survival[["template", "format", f"accuracy_{op}", "share_any_raw", "share_any_significant",
                               "survive_raw", "survive_significant"]], "dyn_survival_table", survived.stem,
                     survived.provenance)
        chosen = _neuron_input("dyn_card_neuron", default="L3N0")
        if chosen is not None:
            st.markdown(f"**{neuron_label(*chosen)}**")
            export.table(result.card(*chosen), "dyn_card", f"{neuron_label(*chosen)}-{survived.stem}",
                         survived.provenance)
        export.table(result.heuristics(), "dyn_heuristics", f"{survived.stem}-heuristics", survived.provenance)

with compare_tab:
    st.caption("Two conditions side by side for one layer or one neuron: two checkpoints of the series, two "
               "templates, or two models of the same family (each computed as a one-checkpoint result).")
    conditions = {}
    dynamics = st.session_state.get(("dynamics", series_text, op, settings))
    if dynamics is not None:
        for row in dynamics.summary.itertuples():
            conditions[f"checkpoint {row.checkpoint}"] = (dynamics.matches[dynamics.matches["checkpoint"]
                                                                           == row.checkpoint], int(row.sweep_id))
    result = st.session_state.get(("robustness", model.fingerprint, op, st.session_state.get("dyn_custom"), settings))
    if result is not None:
        for row in result.summary.itertuples():
            conditions[f"template {row.template}"] = (result.matches[result.matches["template"] == row.template],
                                                      int(row.sweep_id))
    other = st.text_input("Another model of the same family (id or folder)", "", key="dyn_other")
    if other.strip():
        try:
            found = checkpoint_results(load_model(other.strip()), store, op, settings=settings, compute=False)
            if found is None and st.button("Compute it", key="dyn_other_compute"):
                with progress_bar("model") as progress:
                    found = checkpoint_results(load_model(other.strip()), store, op, settings=settings,
                                               progress=progress)
            if found is not None:
                conditions[f"model {other.strip()}"] = (found[1], int(found[0]["sweep_id"].iloc[0]))
        except NeurolabError as error:
            st.error(str(error))
    if len(conditions) < 2:
        st.info("Compute a series or the templates first (two conditions are needed).")
    else:
        names = list(conditions)
        a, b, c = st.columns(3)
        first = a.selectbox("A", names, index=0, key="dyn_a")
        second = b.selectbox("B", names, index=len(names) - 1, key="dyn_b")
        text = c.text_input("Layer or neuron", f"L{layer}", key="dyn_compare_target")
        try:
            target = parse_neuron_label(text) if "N" in text.upper() else (int(text.upper().lstrip("L")), None)
        except (NeurolabError, ValueError):
            st.error(f"{text!r}: write a layer (L3) or a neuron (L3N12)")
            st.stop()
        table = compare(conditions[first][0], conditions[second][0], target[0], target[1])
        counts = table["holds"].value_counts()
        st.markdown(f"both: **{counts.get('both', 0)}**, A only: **{counts.get('A only', 0)}**, "
                    f"B only: **{counts.get('B only', 0)}** (neuron, heuristic) matches")
        values = {**chosen_settings, "series": series_text, "custom": st.session_state.get("dyn_custom") or ""}
        if target[1] is not None:
            left, right = st.columns(2)
            for i, (column, name) in enumerate(((left, first), (right, second))):
                try:
                    nmap = load_neuron_map(store, conditions[name][1], *target)
                    with column:
                        export.chart(kinds.dynamics_map_export(
                            model, {**values, "condition": name, "neuron": neuron_label(*target)}, nmap),
                            key=f"dyn_cmp_{i}")
                except NeurolabError as error:
                    column.info(f"no stored map under {name}: {error}")
        compared = Provenance.of("dynamics-compare", model, {**values, "a": first, "b": second, "target": text})
        export.table(table, "dyn_compare", f"compare-{text}-{OP_NAMES[op]}", compared)
