"""Held-out splits: the operand pairs a model neurolab trained never saw (written beside its weights, read by
evaluation), and the language task's facts split into MathNeuro's non-math samples and the facts it is judged on."""

from __future__ import annotations

import json
import random
from pathlib import Path

from .arithmetic import OPERATORS
from .language import RELATIONS, Fact, facts

METADATA_FILE = "neurolab.json"


def heldout_pairs(folder: Path) -> dict[str, list[tuple[int, int]]] | None:
    """The held-out operand pairs saved by ``python -m neurolab train``, or None for a model it did not train."""
    meta = folder / METADATA_FILE
    if not meta.exists():
        return None
    pairs = json.loads(meta.read_text())["heldout_pairs"]
    return {op: [tuple(p) for p in pairs[op]] for op in OPERATORS}


#: Identity of the language task's held-out split, in every cache key of a result that uses it.
LANGUAGE_SPLIT = "facts-half-v1"


def language_split(seed: int = 0) -> tuple[list[Fact], list[Fact]]:
    """(facts usable as non-math samples, held-out facts to measure non-math accuracy on): per relation, half of
    its facts each (the odd one to the samples), by a seeded shuffle, each half in the task's order. Disjoint, so
    MathNeuro is never judged on the facts it protected."""
    samples: list[Fact] = []
    heldout: list[Fact] = []
    for relation in RELATIONS:
        mine = [f for f in facts() if f.relation == relation]
        order = list(range(len(mine)))
        random.Random(f"{LANGUAGE_SPLIT}:{seed}:{relation}").shuffle(order)
        chosen = set(order[: (len(mine) + 1) // 2])
        samples += [f for i, f in enumerate(mine) if i in chosen]
        heldout += [f for i, f in enumerate(mine) if i not in chosen]
    return samples, heldout
