"""One prompt, looked at closely: the next-token distribution and the most active neurons of every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture.interventions import Intervention
from ..capture.trace import run
from ..models.adapters import hook_name, neuron_label
from ..models.loading import LoadedModel
from ..tasks.arithmetic import ArithmeticPrompt, PromptError, parse_prompt

#: the prompt a dashboard session starts with (answered before the server opens: ``app.py``)
EXAMPLE_PROMPT = "23+45="


@dataclass
class NeuronActivation:
    layer: int
    neuron: int
    activation: float

    @property
    def label(self) -> str:
        return neuron_label(self.layer, self.neuron)


@dataclass
class PromptReport:
    """What the home page shows for one prompt."""

    text: str
    prompt: ArithmeticPrompt
    top_tokens: list[tuple[str, float]]  # (token, probability), most likely first
    answer_probability: float | None  # None when the answer is not one token of the model
    correct: bool
    top_neurons: dict[int, list[NeuronActivation]]  # layer -> most active neurons at the last position
    hook_names: dict[int, str]  # layer -> canonical name (blocks.L.mlp.hook_post)
    module_paths: dict[int, str]  # layer -> HF module whose input holds the neurons


def check_prompt(model: LoadedModel, text: str, answer: bool = True) -> ArithmeticPrompt:
    """Parse ``text`` and check the model reads its operands (and, with ``answer``, can answer it) as single tokens;
    raises PromptError saying why not."""
    prompt = parse_prompt(text)
    limit = model.max_single_token
    checked = [("first operand", prompt.op1), ("second operand", prompt.op2)] + ([("answer", prompt.answer)] if answer
                                                                                 else [])
    for name, value in checked:
        if value > limit:
            raise PromptError(
                f"the {name} {value} is not a single token for this model (integers 0..{limit} are); "
                "the method needs single-token numbers"
            )
    return prompt


def report(model: LoadedModel, text: str, k: int = 5, neurons_per_layer: int = 10,
           intervention: Intervention | None = None) -> PromptReport:
    """Top-k next tokens and, per layer, the ``neurons_per_layer`` largest activations at the last position.

    For gated (Llama-style) models, whose neurons can be negative, "largest" means largest magnitude. An answer
    that is not one token of the model (``97*99=``) still gets its prediction, without the answer's probability.
    """
    text = text.strip()
    prompt = check_prompt(model, text, answer=False)
    capture = run(model, [text], layers=None, logits=True, intervention=intervention)
    probs = capture.logits[0].softmax(-1)
    values, ids = probs.topk(k)
    answer_id = model.number_token_ids[prompt.answer] if prompt.answer <= model.max_single_token else None
    top: dict[int, list[NeuronActivation]] = {}
    for layer, acts in capture.neurons.items():
        row = acts[0]
        order = torch.argsort(row.abs() if model.gated else row, descending=True)[:neurons_per_layer]
        top[layer] = [NeuronActivation(layer, int(n), float(row[n])) for n in order]
    return PromptReport(
        text=text,
        prompt=prompt,
        top_tokens=[(model.token_str(i), float(p)) for p, i in zip(values.tolist(), ids.tolist())],
        answer_probability=None if answer_id is None else float(probs[answer_id]),
        correct=int(ids[0]) == answer_id,
        top_neurons=top,
        hook_names={layer: hook_name(layer) for layer in top},
        module_paths={layer: model.adapter.mlp_out_path(layer) for layer in top},
    )
