"""Accuracy of any loaded model: per operator on arithmetic prompts, and on the non-math task.

For a model neurolab trained, arithmetic is measured on its held-out operand pairs (listed in ``neurolab.json``
beside the weights); for any other model, over the whole valid operand grid up to ``max_op``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..capture.trace import run
from ..models.loading import LoadedModel
from ..tasks.arithmetic import DEFAULT_TEMPLATE, OPERATORS, answer, valid_pairs
from ..tasks.language import facts
from ..train.training import METADATA_FILE


@dataclass
class Score:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass
class Evaluation:
    """Per-operator and non-math scores, and what they were measured on."""

    model: str
    fingerprint: str
    split: str  # "held-out pairs" or "full grid, max_op=N"
    scores: dict[str, Score]

    def as_dict(self) -> dict:
        return {
            "model": self.model, "fingerprint": self.fingerprint, "split": self.split,
            "accuracy": {k: s.accuracy for k, s in self.scores.items()},
            "counts": {k: asdict(s) for k, s in self.scores.items()},
        }


def arithmetic_score(
    model: LoadedModel, op: str, pairs: list[tuple[int, int]], template: str = DEFAULT_TEMPLATE
) -> Score:
    """Top-1 next token == the answer's number token, over ``pairs`` (one batched run)."""
    if not pairs:
        return Score(0, 0)
    prompts = [template.format(op1=a, op=op, op2=b) for a, b in pairs]
    targets = [model.number_token_ids[answer(a, op, b)] for a, b in pairs]
    predicted = run(model, prompts).logits.argmax(-1).tolist()
    return Score(sum(p == t for p, t in zip(predicted, targets)), len(pairs))


def nonmath_score(model: LoadedModel) -> Score:
    """Top-1 next token == the first token of `` answer`` in context, over every fact."""
    items = [(f.prompt, model.continuation_token(f.prompt, " " + f.answer)) for f in facts()]
    items = [(p, t) for p, t in items if t is not None]
    if not items:
        return Score(0, 0)
    predicted = run(model, [p for p, _ in items]).logits.argmax(-1).tolist()
    return Score(sum(p == t for p, (_, t) in zip(predicted, items)), len(items))


def heldout_pairs(model: LoadedModel) -> dict[str, list[tuple[int, int]]] | None:
    """The held-out split saved by ``python -m neurolab train``, or None for a model neurolab did not train."""
    meta = Path(model.source) / METADATA_FILE
    if not meta.exists():
        return None
    pairs = json.loads(meta.read_text())["heldout_pairs"]
    return {op: [tuple(p) for p in pairs[op]] for op in OPERATORS}


def evaluate(model: LoadedModel, max_op: int = 100, sample: int | None = None, seed: int = 0) -> Evaluation:
    """Accuracy per operator and on the non-math task; ``sample`` caps the prompts per operator (seeded)."""
    split_pairs = heldout_pairs(model)
    if split_pairs is None:
        split = f"full grid, max_op={max_op}"
        split_pairs = {op: valid_pairs(op, max_op, model.max_single_token) for op in OPERATORS}
    else:
        split = "held-out pairs"
    rng = random.Random(seed)
    scores: dict[str, Score] = {}
    for op in OPERATORS:
        pairs = split_pairs[op]
        if sample is not None and len(pairs) > sample:
            pairs = rng.sample(pairs, sample)
        scores[op] = arithmetic_score(model, op, pairs)
    scores["nonmath"] = nonmath_score(model)
    if sample is not None:
        split += f", {sample} sampled per operator"
    return Evaluation(model.name, model.fingerprint, split, scores)
