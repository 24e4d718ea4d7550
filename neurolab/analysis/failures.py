"""Failure analysis (``../shared/science.md`` part A, "Causal checks"): on prompts the model gets wrong, do the
heuristic neurons that should fire fail to fire, or do fewer neurons fire overall?

The heuristic neurons are classified on the training grid (``train_max_op``; the embedded model was trained on
operands < 100); the prompts come from a larger grid (``eval_max_op``) where the model errs. The exact rule, per
prompt p of the evaluation sample and per classified neuron n (a top-N neuron with at least one matched heuristic):

- *should fire*: at least one of n's matched heuristics applies to p (p is in its matching set, judged on p's op1,
  op2 and correct result);
- n *fires for* heuristic h when its activation at p's last position (the K value, never KV) is at least its k_h-th
  largest activation over the training grid, k_h being h's k in the classification (the number of top prompts the
  score was judged on); for a match on the bottom side (gated models) at most its k_h-th smallest;
- *fires and should*: n fires for at least one of its matched heuristics that applies to p;
- *fires (total)*: n fires for at least one of its matched heuristics, whether it applies or not.

Per prompt the three are counts of neurons; :func:`failure_summary` averages them per group (correct / wrong).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..capture.interventions import CLEAN, Intervention
from ..capture.trace import run
from ..errors import InputError
from ..heuristics import parse
from ..models.loading import LoadedModel
from ..progress import Progress, report, staged
from ..store import Store
from ..tasks.grid import PromptTemplate
from .classification import ClassifySettings
from .knockout import _rng, analysis_spec, classification
from .sweep import NeuronSelection, grid_for, run_sweep

COUNTS = ["should_fire", "fire_and_should", "fire_total"]
COLUMNS = ["idx", "prompt", "op1", "op2", "answer", "top1", "group", *COUNTS]


def _threshold(values: np.ndarray, k: int, side: str) -> float:
    """The k-th largest of ``values`` (k-th smallest for the bottom side), k clipped to 1..len(values)."""
    k = int(min(max(k, 1), len(values)))
    if side == "bottom":
        return float(np.partition(values, k - 1)[k - 1])
    return float(-np.partition(-values, k - 1)[k - 1])


def failure_analysis(
    model: LoadedModel,
    store: Store,
    op: str,
    train_max_op: int = 100,
    eval_max_op: int = 150,
    n: int = 50,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    template: PromptTemplate | None = None,
    settings: ClassifySettings | None = None,
    layers: Sequence[int] | None = None,
    intervention: Intervention | None = None,
) -> pd.DataFrame:
    """Per prompt of a seeded sample of ``n`` correct and ``n`` wrong prompts of the ``eval_max_op`` grid (fewer
    when fewer exist): the counts of the module docstring's rule (columns :data:`COLUMNS`; ``group`` is "correct" or
    "wrong"). The embedded model errs on ``+`` beyond its training range: with eval_max_op=150 about 12,500 of the
    22,500 prompts are wrong. ``progress`` reports the classification's stages (as "classify: ..."), then
    "evaluation grid" (prompts) and "activations" (sampled prompts)."""
    settings = settings or ClassifySettings()
    intervention = intervention or CLEAN
    if n < 1:
        raise InputError("n must be at least 1")
    train = grid_for(model, op, train_max_op, template)
    evaluate = grid_for(model, op, eval_max_op, template)
    spec = analysis_spec(model, train, intervention, settings, layers, eval_max_op=eval_max_op, n=n, seed=seed)

    def compute() -> pd.DataFrame:
        found = classification(model, store, train, settings, layers, intervention, progress)
        report(progress, 0, len(evaluate), "evaluation grid")
        sweep = run_sweep(model, store, op, NeuronSelection("none"), eval_max_op, evaluate.template, intervention,
                          progress=staged(progress, "evaluation grid"))
        prompts = store.prompts(sweep.sweep_id)
        rng = _rng(seed, "failures")
        picked = []
        for group, wanted in (("correct", True), ("wrong", False)):
            pool = np.flatnonzero(prompts["correct"].to_numpy(bool) == wanted)
            picked.append((group, np.sort(rng.choice(pool, min(n, len(pool)), replace=False))))
        rows = np.concatenate([ids for _, ids in picked])
        sample = prompts.iloc[rows].reset_index(drop=True)
        sample["group"] = np.concatenate([[group] * len(ids) for group, ids in picked])
        op1, op2, result = (sample[c].to_numpy() for c in ("op1", "op2", "answer"))

        matched = found.matched.drop_duplicates(["heuristic", "layer", "neuron"])
        neurons = {int(layer): sorted(set(part["neuron"].astype(int))) for layer, part in matched.groupby("layer")}
        report(progress, 0, len(sample), "activations")
        capture = run(model, list(sample["prompt"]), neurons, intervention=intervention)
        should = fire_should = fire_any = np.zeros(len(sample), np.int64)
        for layer, ids in neurons.items():
            k_maps, _ = store.layer_maps(found.sweep_id, layer, ids)
            acts = capture.neurons[layer].numpy().T  # [neurons, prompts]
            n_should = np.zeros((len(ids), len(sample)), bool)
            n_fire_should, n_fire = np.zeros_like(n_should), np.zeros_like(n_should)
            column = {nid: j for j, nid in enumerate(ids)}
            for row in matched[matched["layer"] == layer].itertuples():
                j = column[int(row.neuron)]
                family, params = parse(row.heuristic)
                applies = family.matching_set(params, op1, op2, result)
                limit = _threshold(k_maps[j], int(row.k), row.side)
                fires = acts[j] <= limit if row.side == "bottom" else acts[j] >= limit
                n_should[j] |= applies
                n_fire_should[j] |= applies & fires
                n_fire[j] |= fires
            should = should + n_should.sum(0)
            fire_should = fire_should + n_fire_should.sum(0)
            fire_any = fire_any + n_fire.sum(0)
        report(progress, len(sample), len(sample), "activations")
        sample["should_fire"], sample["fire_and_should"], sample["fire_total"] = should, fire_should, fire_any
        return sample[COLUMNS]

    return store.cached_frame("failure_analysis", spec, compute)


def failure_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group (correct, wrong): prompts, the mean of each count, and the share of should-fire neurons that fire
    (sum of fire_and_should over sum of should_fire)."""
    table = frame.groupby("group")[COUNTS].mean()
    table.insert(0, "prompts", frame.groupby("group").size())
    sums = frame.groupby("group")[["fire_and_should", "should_fire"]].sum()
    table["fire_share"] = sums["fire_and_should"] / sums["should_fire"].where(sums["should_fire"] > 0)
    return table.reset_index()
