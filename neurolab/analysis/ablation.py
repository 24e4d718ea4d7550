"""Ablations over a whole operand grid: accuracy before and after, the effect map, and a random control.

An ablation is an :class:`~neurolab.capture.interventions.Intervention` (zero or mean, on any set of neurons) that
records where its neurons came from. Applying it to a grid is a sweep of the grid's answers under it, so every
result is cached in the store under the intervention's key: toggling an ablation back on computes nothing, and the
clean baseline is computed once. Each ablation comes with a random control of the same size per layer, drawn
(seeded) from the same layers' top-200 neurons by importance, minus the chosen ones (science.md, "Causal checks").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import CLEAN, GridRef, Intervention, NeuronAblation, ablation
from ..capture.trace import keep_clean, run_side_by_side
from ..errors import InputError
from ..heuristics import RULES_VERSION
from ..models.loading import LoadedModel
from ..progress import Progress, report
from ..store import Store
from ..store.deferred import later
from ..tasks.grid import OperandGrid, PromptTemplate
from .importance import ensure_importance
from .sweep import (
    answer_rows,
    grid_for,
    open_sweep,
    store_answers,
    stored_answers,
    top_neurons,
)

ORIGINS = ("manual", "heuristic", "top-n", "random control")
CONTROL_POOL = 200
#: grids of answers kept in memory (a toggled ablation comes back on without touching the store)
RECENT_GRIDS = 32
_RECENT: OrderedDict[tuple, pd.DataFrame] = OrderedDict()


def neuron_ablation(neurons: Sequence[tuple[int, int]], mode: str = "zero", grid: OperandGrid | None = None,
                    name: str = "", origin: str = "manual") -> Intervention:
    """An ablation of ``neurons``; a mean ablation averages over ``grid`` (the operator's grid)."""
    ref = None
    if mode == "mean":
        if grid is None:
            raise InputError("a mean ablation needs the operator's grid to average over")
        template = grid.template
        ref = GridRef(grid.op, grid.max_op, template.format, template.fewshot, template.seed)
    count = f"{len(neurons)} neuron{'' if len(neurons) == 1 else 's'}"
    return ablation(neurons, mode, grid=ref, name=name or f"{origin}: {count}, {mode}-ablated", origin=origin)


def importance_of(model: LoadedModel, store: Store, grid: OperandGrid, n_prompts: int = 50,
                  seed: int = 0) -> pd.DataFrame:
    """The clean model's importance ranking on ``grid`` (computed once, stored)."""
    return ensure_importance(model, store, open_sweep(model, store, grid, Intervention()), grid, n_prompts, seed)


def top_n(model: LoadedModel, store: Store, grid: OperandGrid, layer: int, n: int) -> list[tuple[int, int]]:
    """A layer's ``n`` most important neurons for the grid's operator."""
    if not 0 <= layer < model.n_layers:
        raise InputError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    return [(layer, neuron) for neuron in top_neurons(importance_of(model, store, grid), layer, n)]


def heuristic_neurons(model: LoadedModel, store: Store, grid: OperandGrid, heuristic: str) -> list[tuple[int, int]]:
    """The neurons the stored classification of the grid's operator labelled with ``heuristic`` (classify first)."""
    rows = store.atlas_rows(model.fingerprint, RULES_VERSION)
    rows = rows[(rows["op"] == grid.op) & (rows["max_op"] == grid.max_op) & (rows["template"] == grid.template.key)
                & (rows["intervention"] == "none")]
    if rows.empty:
        raise InputError(f"nothing is classified for {grid.op} (max_op {grid.max_op}) yet: run "
                         f"`python -m neurolab classify --op {grid.op}` or the Heuristic Atlas first")
    chosen = rows[rows["heuristic"] == heuristic]
    if chosen.empty:
        known = ", ".join(rows["heuristic"].value_counts().index[:8])
        raise InputError(f"no neuron matches {heuristic!r} for {grid.op}; the most common are: {known}")
    return sorted({(int(r.layer), int(r.neuron)) for r in chosen.itertuples()})


def random_control(model: LoadedModel, store: Store, grid: OperandGrid, chosen: Intervention, seed: int = 0,
                   pool: int = CONTROL_POOL) -> Intervention:
    """As many random neurons per layer as ``chosen`` ablates, from the layer's top-``pool`` by importance minus the
    chosen ones (seeded), ablated the same way."""
    steps = [step for step in chosen.steps if isinstance(step, NeuronAblation)]
    if not steps:
        raise InputError("a random control needs an ablation of neurons")
    picked = {n for step in steps for n in step.neurons}
    ranked = importance_of(model, store, grid)
    rng = np.random.default_rng(seed)
    drawn = []
    for layer in sorted({layer for layer, _ in picked}):
        count = sum(1 for lay, _ in picked if lay == layer)
        candidates = [n for n in top_neurons(ranked, layer, pool) if (layer, n) not in picked]
        if len(candidates) < count:  # small layers: widen the pool to the whole layer
            candidates = [n for n in range(model.d_mlp) if (layer, n) not in picked]
        drawn += [(layer, int(n)) for n in rng.choice(candidates, size=count, replace=False)]
    return Intervention((NeuronAblation(tuple(drawn), steps[0].mode, steps[0].value, steps[0].grid),),
                        f"random control of {chosen.name or chosen.key} (seed {seed})", "random control")


@dataclass
class GridAblation:
    """Per prompt of a grid: the correct answer's probability and top-1 correctness before, after, and under the
    control (columns ``p_before``, ``p_after``, ``p_control``, ``correct_*``; control columns absent without one)."""

    grid: OperandGrid
    intervention: Intervention
    control: Intervention | None
    prompts: pd.DataFrame

    def accuracy(self, which: str) -> float:
        return float(self.prompts[f"correct_{which}"].mean())

    def summary(self) -> dict[str, float]:
        found = {"before": self.accuracy("before"), "after": self.accuracy("after")}
        if self.control is not None:
            found["control"] = self.accuracy("control")
        return found

    def effect_map(self, which: str = "after") -> np.ndarray:
        """``[max_op, max_op]``: change of the correct answer's probability (op1 rows, op2 columns; NaN off-grid)."""
        grid = np.full((self.grid.max_op, self.grid.max_op), np.nan)
        delta = self.prompts[f"p_{which}"] - self.prompts["p_before"]
        grid[self.prompts["op1"].to_numpy(), self.prompts["op2"].to_numpy()] = delta.to_numpy()
        return grid

    def results_lost(self, count: int = 10) -> pd.DataFrame:
        """The answers whose prompts lost most accuracy (and probability) under the ablation."""
        frame = self.prompts.assign(lost=self.prompts["correct_before"].astype(int)
                                    - self.prompts["correct_after"].astype(int),
                                    dp=self.prompts["p_after"] - self.prompts["p_before"])
        table = frame.groupby("answer").agg(prompts=("lost", "size"), accuracy_lost=("lost", "mean"),
                                            mean_dp=("dp", "mean")).reset_index()
        return table.sort_values(["accuracy_lost", "mean_dp"], ascending=[False, True]).head(count)


def _memory_key(model: LoadedModel, grid: OperandGrid, intervention: Intervention) -> tuple:
    return model.fingerprint, grid.op, grid.max_op, grid.template.key, intervention.key


def _remember(key: tuple, frame: pd.DataFrame) -> None:
    _RECENT[key] = frame
    _RECENT.move_to_end(key)
    while len(_RECENT) > RECENT_GRIDS:
        _RECENT.popitem(last=False)


def grid_answers(model: LoadedModel, store: Store, grid: OperandGrid, interventions: Sequence[Intervention],
                 progress: Progress | None = None) -> list[pd.DataFrame]:
    """The grid's answers (per prompt: ``answer_prob``, ``correct``, ...) under each intervention, from memory, from
    the store, or computed together: one batched pass, each intervention's rows side by side, starting at the first
    layer it edits (:func:`~neurolab.capture.trace.run_side_by_side`). New answers are returned first and written to
    the store after (:mod:`neurolab.store.deferred`)."""
    found: list[pd.DataFrame | None] = []
    for intervention in interventions:
        key = _memory_key(model, grid, intervention)
        frame = _RECENT.get(key)
        if frame is None:
            frame = stored_answers(model, store, grid, intervention)
            if frame is not None:
                _remember(key, frame)
        found.append(frame)
    missing = [i for i, frame in enumerate(found) if frame is None]
    ids = torch.as_tensor(np.asarray(model.number_token_ids)[np.asarray(grid.answers)])[:, None]
    # the clean grid first and alone (it keeps the residuals every edit starts from), then the edits side by side
    for batch in ([i for i in missing if not interventions[i]], [i for i in missing if interventions[i]]):
        if not batch:
            continue
        stage = "clean grid" if not interventions[batch[0]] else "grid under the ablation"
        report(progress, 0, len(grid), stage)
        if interventions[batch[0]]:
            keep_clean(model, grid.prompts)  # once per grid and process: every edit then starts at its layer
        chosen = [interventions[i] for i in batch]
        captures = run_side_by_side(model, grid.prompts, chosen, token_ids=ids)
        for i, intervention, capture in zip(batch, chosen, captures):
            frame = answer_rows(model, grid, 0, len(grid), capture)
            _remember(_memory_key(model, grid, intervention), frame)
            found[i] = frame
            later(lambda iv=intervention, c=capture: store_answers(model, store, grid, iv, c))
        report(progress, len(grid), len(grid), stage)
    return found


def ablate_grid(model: LoadedModel, store: Store, op: str, intervention: Intervention, max_op: int = 100,
                template: PromptTemplate | None = None, control_seed: int | None = 0,
                progress: Progress | None = None) -> GridAblation:
    """The grid's answers without and with ``intervention`` (and under its random control unless ``control_seed``
    is None). The clean grid is a stored sweep (computed once, keeping its residuals for the edits); the ablated
    grid and its control are computed together in one pass from the first layer they edit, shown before they are
    stored; whatever is known already is not computed again."""
    grid = grid_for(model, op, max_op, template)
    control = None if control_seed is None else random_control(model, store, grid, intervention, control_seed)
    answers = grid_answers(model, store, grid, [CLEAN, intervention] + ([control] if control else []), progress)
    before, after = answers[:2]
    frame = before[["idx", "op1", "op2", "answer"]].assign(
        p_before=before["answer_prob"], correct_before=before["correct"],
        p_after=after["answer_prob"].to_numpy(), correct_after=after["correct"].to_numpy())
    if control is not None:
        frame = frame.assign(p_control=answers[2]["answer_prob"].to_numpy(),
                             correct_control=answers[2]["correct"].to_numpy())
    report(progress, 1, 1, "done")
    return GridAblation(grid, intervention, control, frame)
