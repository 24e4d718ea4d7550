"""Circuit localisation: which MLPs and attention heads, at which positions, carry an operator's answer.

For ``n`` correct clean prompts of a grid and a counterfactual of each, chosen by a rule the user picks, every
layer's MLP output and every attention head is patched from the counterfactual into the clean run at each position
alone (:func:`neurolab.capture.patching.patch_components`), and the effect on the clean answer is measured.

Counterfactual rules (each seeded):

- ``op1``: change op1 only: a random other valid op1 with the same op2 (and another answer);
- ``op2``: change op2 only: the same op1, a random other valid op2 (and another answer);
- ``both``: a random other valid prompt of the grid with another answer (as attribution patching pairs them).

Clean prompts: walk a permutation of the grid drawn from ``seed`` and keep the first ``n`` the model answers
correctly (the sweep's stored answers when the store has them, else a small probe; both choose the same prompts)
that have a counterfactual under the rule. Positions must align, so only prompts of the grid's most common token
length are used, with counterfactuals of the same length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import CLEAN, Intervention
from ..capture.patching import METRICS, patch_components
from ..capture.trace import run
from ..errors import InputError
from ..models.loading import LoadedModel
from ..progress import Progress
from ..store import Store
from ..tasks.grid import OperandGrid, PromptTemplate
from .importance import stored_correctness
from .sweep import find_sweep, grid_for

RULES = ("op1", "op2", "both")
KIND = "circuit"


@dataclass(frozen=True)
class Counterfactuals:
    """Clean (correct) prompts, their counterfactuals under ``rule``, and both answers' token ids."""

    rule: str
    clean: list[str]
    corrupt: list[str]
    clean_answer: torch.Tensor  # token ids r
    corrupt_answer: torch.Tensor  # token ids r'


def _candidates(rule: str, i: int, op1: np.ndarray, op2: np.ndarray, answers: np.ndarray,
                usable: np.ndarray) -> np.ndarray:
    ok = usable & (answers != answers[i])
    if rule == "op1":
        ok &= (op2 == op2[i]) & (op1 != op1[i])
    elif rule == "op2":
        ok &= (op1 == op1[i]) & (op2 != op2[i])
    return np.flatnonzero(ok)


def counterfactual_pairs(model: LoadedModel, grid: OperandGrid, rule: str = "both", n: int = 20, seed: int = 0,
                         correct: np.ndarray | None = None, intervention: Intervention | None = None
                         ) -> Counterfactuals:
    """``n`` correct clean prompts of ``grid`` and a counterfactual of each under ``rule`` (see the module)."""
    if rule not in RULES:
        raise InputError(f"unknown counterfactual rule {rule!r}; use one of {', '.join(RULES)}")
    if n < 1:
        raise InputError("at least one prompt pair is needed")
    prompts = grid.prompts
    lengths = np.array([len(t) for t in model.tokenizer(prompts, add_special_tokens=False)["input_ids"]])
    usable = lengths == np.bincount(lengths).argmax()
    op1 = np.array([a for a, _ in grid.pairs])
    op2 = np.array([b for _, b in grid.pairs])
    answers = np.asarray(grid.answers)
    ids = np.asarray(model.number_token_ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(grid))
    order = order[usable[order]]
    chosen: list[tuple[int, int]] = []
    step = max(64, 4 * n)
    for lo in range(0, len(order), step):
        batch = order[lo:lo + step]
        if correct is None:
            probe = run(model, [prompts[i] for i in batch], intervention=intervention)
            ok = probe.top1 == ids[answers[batch]]
        else:
            ok = np.asarray(correct)[batch]
        for i in batch[ok]:
            candidates = _candidates(rule, int(i), op1, op2, answers, usable)
            if len(candidates):
                chosen.append((int(i), int(candidates[rng.integers(len(candidates))])))
            if len(chosen) == n:
                break
        if len(chosen) == n:
            break
    if not chosen:
        raise InputError(f"no correctly answered prompt of this grid has a counterfactual under rule {rule!r}")
    clean, corrupt = [i for i, _ in chosen], [j for _, j in chosen]
    return Counterfactuals(rule, [prompts[i] for i in clean], [prompts[j] for j in corrupt],
                           torch.as_tensor(ids[answers[clean]]), torch.as_tensor(ids[answers[corrupt]]))


def circuit_spec(model: LoadedModel, grid: OperandGrid, rule: str, n: int, seed: int,
                 layers: Sequence[int] | None, intervention: Intervention | None) -> dict:
    """Everything a circuit result depends on (its cache key)."""
    return {"model": model.fingerprint, "op": grid.op, "max_op": grid.max_op, "template": grid.template.key,
            "rule": rule, "n": n, "seed": seed, "layers": "all" if layers is None else sorted(set(layers)),
            "intervention": (intervention or CLEAN).key, "version": 1}


def circuit_effects(model: LoadedModel, store: Store, op: str, max_op: int = 100,
                    template: PromptTemplate | None = None, rule: str = "both", n: int = 20, seed: int = 0,
                    layers: Sequence[int] | None = None, intervention: Intervention | None = None,
                    metric: str = "fraction", progress: Progress | None = None) -> pd.DataFrame:
    """The patching effect of every (component, position) for ``op``, computed once per spec and stored.

    One row per (component, position): component (``L0 MLP``, ``L0H0`` ...), layer, head (<NA> for an MLP),
    position, token (of the first clean prompt), the metrics of :mod:`neurolab.capture.patching`, and ``effect`` =
    the ``metric`` column (default ``fraction``: the share of the clean -> counterfactual logit-difference swing).
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if rule not in RULES:
        raise InputError(f"unknown counterfactual rule {rule!r}; use one of {', '.join(RULES)}")
    grid = grid_for(model, op, max_op, template)

    def compute() -> pd.DataFrame:
        sweep_id = find_sweep(model, store, grid, intervention)
        correct = None if sweep_id is None else stored_correctness(store, sweep_id, len(grid))
        pairs = counterfactual_pairs(model, grid, rule, n, seed, correct, intervention)
        frame = patch_components(model, pairs.clean, pairs.corrupt, pairs.clean_answer, pairs.corrupt_answer,
                                 intervention, layers=layers, progress=progress)
        frame["rule"] = rule
        frame["example"] = f"{pairs.clean[0]} -> {pairs.corrupt[0]}"
        return frame

    frame = store.cached_frame(KIND, circuit_spec(model, grid, rule, n, seed, layers, intervention), compute)
    frame["head"] = frame["head"].astype("Int64")
    frame["effect"] = frame[metric]
    return frame


def top_components(frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` (component, position) rows with the largest absolute effect."""
    return frame.reindex(frame["effect"].abs().sort_values(ascending=False).index).head(k)
