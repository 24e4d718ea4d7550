"""neurolab home: type an arithmetic prompt, see the answer distribution, the neurons that light up, and its bag
of heuristics."""

import streamlit as st

from neurolab.analysis.heuristic_bag import heuristic_bag
from neurolab.export import kinds
from neurolab.models.adapters import parse_neuron_label
from neurolab.tasks.arithmetic import PromptError
from pages import PICKS_KEY, active_intervention, model_sidebar, pick_neuron, shared_store, state
from pages.common import export

st.set_page_config(page_title="neurolab", page_icon="🧮", layout="wide")
st.title("neurolab")
st.caption("Find, test and edit the neurons language models use for arithmetic.")

model = model_sidebar()
left, right = st.columns([2, 1])
text = left.text_input("Arithmetic prompt", key=state.PROMPT, max_chars=state.MAX_PROMPT,
                       help="<number><op><number>= with op one of + - * / (integer division)")
st.session_state.setdefault("per_layer", 10)
per_layer = right.slider("Neurons per layer", 3, 30, key="per_layer")

active = active_intervention()
chosen = {"prompt": text, "per_layer": per_layer}
try:
    result = kinds.prompt_report(model, chosen, active)
except PromptError as error:
    st.error(f"Malformed prompt: {error}")
    st.stop()

best, best_p = result.top_tokens[0]
if result.answer_probability is None:
    verdict = (f"the answer {result.prompt.answer} is not one token of this model (integers 0..{model.max_single_token}"
               " are), so it cannot be right in one step")
else:
    verdict = "correct" if result.correct else f"wrong (the answer is {result.prompt.answer})"
    verdict += f"; p(answer {result.prompt.answer}) = {result.answer_probability:.1%}"
st.markdown(
    f"**{result.text}** → model says **{best}** ({best_p:.1%}), {verdict}"
    + (f" — under the ablation *{active.describe()}*" if active is not None else "")
)
export.chart(kinds.prediction_export(model, chosen, active, result), "next_token_chart")

# the paper's finding for this prompt: the classified neurons that fire on it, grouped by heuristic
bag = None
if result.answer_probability is not None:  # its direct effects are on logit(answer), so the answer is one token
    bag = heuristic_bag(model, shared_store(), text, intervention=active)
    if bag.groups.empty:  # nothing to draw: say why (not classified yet, or no classified neuron fires)
        st.info(bag.message)
    else:
        export.chart(kinds.bag_export(model, {"prompt": text}, active, bag), "bag_chart")

event = export.chart(kinds.neurons_export(model, chosen, active, result), "neurons_chart", on_select="rerun",
                     selection_mode="points")
clicked = [point["y"] for point in (event.selection.points if event is not None else [])]
if clicked:  # a click opens the neuron, or picks it for the Ablation Lab
    label = clicked[-1]
    layer, _ = parse_neuron_label(label)
    labels = bag.neurons[bag.neurons["label"] == label]["heuristic"] if bag is not None and len(bag.neurons) else []
    st.markdown(f"**{label}**" + (f": {', '.join(labels)} on this prompt" if len(labels) else
                                   ": no classified heuristic fires for it on this prompt"))
    o1, o2 = st.columns(2)
    if o1.button(f"Open {label} on the Operand Grid", key="open_neuron"):
        st.session_state[state.LAYER], st.session_state[state.NEURON] = layer, label
        st.session_state[state.OP] = result.prompt.op
        st.switch_page("pages/2_Operand_Grid.py")
    o2.button(f"Pick {label} for the Ablation Lab", key="pick_clicked", on_click=pick_neuron, args=(label,))
if st.session_state.get(PICKS_KEY):
    st.caption(f"Picked for the Ablation Lab: {', '.join(st.session_state[PICKS_KEY])}.")
st.caption(
    "A neuron is one coordinate of the MLP's hidden activation, i.e. the input of the down projection "
    f"({result.hook_names[0]} = input of {result.module_paths[0]}). "
    + ("This model's MLP is gated: neurons can be negative, so they are ranked by magnitude." if model.gated else "")
)
