"""Accuracy of any loaded model: per operator on arithmetic prompts, and on the non-math task.

For a model neurolab trained, arithmetic is measured on its held-out operand pairs (listed in ``neurolab.json``
beside the weights); for any other model, over the whole valid operand grid up to ``max_op``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..capture.interventions import Intervention
from ..capture.trace import run
from ..models.loading import LoadedModel
from ..tasks.arithmetic import DEFAULT_TEMPLATE, OPERATORS, answer, valid_pairs
from ..tasks.language import Fact, facts
from ..tasks.splits import heldout_pairs


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
    model: LoadedModel, op: str, pairs: list[tuple[int, int]], template: str = DEFAULT_TEMPLATE,
    intervention: Intervention | None = None,
) -> Score:
    """Top-1 next token == the answer's number token, over ``pairs`` (one batched run)."""
    if not pairs:
        return Score(0, 0)
    prompts = [template.format(op1=a, op=op, op2=b) for a, b in pairs]
    targets = [model.number_token_ids[answer(a, op, b)] for a, b in pairs]
    predicted = run(model, prompts, intervention=intervention).top1.tolist()
    return Score(sum(p == t for p, t in zip(predicted, targets)), len(pairs))


def nonmath_score(model: LoadedModel, intervention: Intervention | None = None,
                  chosen: Sequence[Fact] | None = None) -> Score:
    """Top-1 next token == the first token of `` answer`` in context, over ``chosen`` facts (default: every fact),
    in one batched run."""
    items = [(f.prompt, model.continuation_token(f.prompt, " " + f.answer)) for f in (facts() if chosen is None
                                                                                       else chosen)]
    items = [(p, t) for p, t in items if t is not None]
    if not items:
        return Score(0, 0)
    predicted = run(model, [p for p, _ in items], intervention=intervention).top1.tolist()
    return Score(sum(p == t for p, (_, t) in zip(predicted, items)), len(items))


def evaluate(model: LoadedModel, max_op: int = 100, sample: int | None = None, seed: int = 0,
             intervention: Intervention | None = None) -> Evaluation:
    """Accuracy per operator and on the non-math task, under ``intervention``; ``sample`` caps the prompts per
    operator (seeded)."""
    split_pairs = heldout_pairs(Path(model.source))
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
        scores[op] = arithmetic_score(model, op, pairs, intervention=intervention)
    scores["nonmath"] = nonmath_score(model, intervention)
    if sample is not None:
        split += f", {sample} sampled per operator"
    if intervention:
        split += f", under {intervention.describe()} ({intervention.key})"
    return Evaluation(model.name, model.fingerprint, split, scores)
