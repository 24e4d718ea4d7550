"""MathNeuro's claims tested where they can fail: scaling where accuracy has room, single samples, the frontier.

On the embedded model's training grids math accuracy sits at its ceiling, so "scaling the math-specific weights by
~1.1 improves math" cannot show there. A :class:`Condition` names where it can: the out-of-range grid (operands up
to 150, never seen in training), an earlier training checkpoint, another prompt template. Each evaluation is a
seeded subset of the condition's grid, stored per prompt (correct or not) so that intervals come from the prompts
themselves: a bootstrap over prompts (:func:`bootstrap_mean`; paired, per prompt, for a gain over clean).

- :func:`scaling_study`: per condition, the math-specific weights (scored on that condition's model) multiplied by
  each factor 0.8 ... 1.5, against as many random weights of the same matrices scaled by the same factor.
- :func:`single_sample_study`: masks from one math and one non-math sample, for many seeds, against the
  100-sample masks (math drop and non-math change under pruning, Jaccard of the masks).
- :func:`frontier`: math drop against non-math change over K and a separate non-math K (``k_general``), with
  non-math measured on held-out facts only.

Every evaluation is cached in the store (kinds ``mathneuro-prompts`` and ``mathneuro-nonmath``), keyed by the
model fingerprint, the condition and the intervention key (the masks' digests): a rerun computes nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..capture.interventions import CLEAN, Intervention
from ..capture.trace import run
from ..errors import InputError
from ..models.loading import LoadedModel, load_model
from ..progress import Progress, report
from ..tasks.arithmetic import OPERATORS
from ..tasks.grid import OperandGrid, parse_template
from ..tasks.samples import SampleSet, load_samples
from ..tasks.splits import language_split
from .mathneuro import (
    NONMATH_SPLIT,
    Masks,
    edit,
    facts_accuracy,
    mask_counts,
    math_specific,
    nonmath_accuracy,
    random_masks,
    scores_for,
)

FACTORS = (0.8, 0.9, 1.1, 1.2, 1.3, 1.4, 1.5)
BOOTSTRAP = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Condition:
    """Where math accuracy is measured: a model (``checkpoint``: None for the model itself, a shipped checkpoint's
    name such as ``step-01000``, or a folder), one operator's grid under a template, and a seeded subset of its
    prompts (``prompts`` 0: all of them)."""

    checkpoint: str | None = None
    template: str = "plain"
    max_op: int = 100
    op: str = "+"
    prompts: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise InputError(f"unknown operator {self.op!r}; use one of {' '.join(OPERATORS)}")
        if self.prompts < 0 or self.max_op < 1:
            raise InputError("a condition needs prompts >= 0 and max_op >= 1")
        parse_template(self.template)

    @property
    def label(self) -> str:
        parts = [self.checkpoint or "final", self.template, f"{self.op} <{self.max_op}"]
        return " · ".join(parts)

    @property
    def spec(self) -> dict:
        return {**asdict(self), "template": parse_template(self.template).key}


#: The conditions the issue names: operands the model never saw, an early checkpoint, a template far from ceiling.
CONDITIONS: dict[str, Condition] = {
    "out-of-range": Condition(max_op=150),
    "step-01000": Condition(checkpoint="step-01000"),
    "fewshot": Condition(template="fewshot"),
    "spaced": Condition(template="spaced"),
    "training-grid": Condition(),
}


def parse_conditions(text: str | None, prompts: int | None = None) -> list[Condition]:
    """Comma-separated preset names (:data:`CONDITIONS`) or ``checkpoint:template:max_op:op`` items (empty parts
    keep the defaults, e.g. ``step-00500::150:+``); ``prompts`` overrides every condition's subset size."""
    chosen = []
    for item in (text or "out-of-range,step-01000,fewshot").split(","):
        item = item.strip()
        if not item:
            continue
        if item in CONDITIONS:
            cond = CONDITIONS[item]
        else:
            parts = item.split(":")
            if len(parts) != 4:
                raise InputError(f"condition {item!r}: use a preset ({', '.join(CONDITIONS)}) or "
                                 "checkpoint:template:max_op:op, e.g. step-00500::150:+")
            ckpt, template, max_op, op = parts
            try:
                cond = Condition(ckpt or None, template or "plain", int(max_op or 100), op or "+")
            except ValueError:
                raise InputError(f"condition {item!r}: max_op must be a whole number") from None
        chosen.append(cond if prompts is None else Condition(**{**asdict(cond), "prompts": prompts}))
    if not chosen:
        raise InputError("give at least one condition")
    return chosen


def condition_model(model: LoadedModel, cond: Condition) -> LoadedModel:
    """The model a condition is measured on: ``model`` itself, or a checkpoint loaded like it (device, dtype)."""
    if cond.checkpoint is None:
        return model
    shipped = Path(model.source) / "checkpoints" / cond.checkpoint
    path = shipped if shipped.is_dir() else Path(cond.checkpoint)
    if not path.is_dir():
        raise InputError(f"checkpoint {cond.checkpoint!r}: no shipped checkpoint of that name (in "
                         f"{shipped.parent}) and no such folder")
    return load_model(str(path), device=str(model.device), dtype=model.dtype)


def condition_prompts(model: LoadedModel, cond: Condition) -> tuple[list[str], list[int]]:
    """The condition's prompts and answer token ids: its grid (row-major), a seeded subset of it when asked."""
    try:
        grid = OperandGrid(cond.op, cond.max_op, model.max_single_token, parse_template(cond.template))
    except InputError as error:
        raise InputError(f"condition {cond.label}: {error}") from None
    index = range(len(grid))
    if 0 < cond.prompts < len(grid):
        index = sorted(random.Random(f"{cond.seed}:{cond.op}:{cond.max_op}").sample(index, cond.prompts))
    return [grid.prompts[i] for i in index], [model.number_token_ids[grid.answers[i]] for i in index]


def _cached(store, kind: str, spec: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    return store.cached_frame(kind, spec, compute) if store is not None else compute()


def correct_per_prompt(model: LoadedModel, cond: Condition, intervention: Intervention | None = None,
                       store=None) -> np.ndarray:
    """Per prompt of the condition: is the top-1 token the answer (under ``intervention``)? Cached per
    (model, condition, intervention)."""
    intervention = intervention or CLEAN

    def compute() -> pd.DataFrame:
        prompts, targets = condition_prompts(model, cond)
        top1 = run(model, prompts, intervention=intervention).top1.tolist()
        return pd.DataFrame({"correct": [p == t for p, t in zip(top1, targets)]})

    spec = {"model": model.fingerprint, "condition": cond.spec, "intervention": intervention.key}
    return _cached(store, "mathneuro-prompts", spec, compute)["correct"].to_numpy(bool)


def stored_nonmath(model: LoadedModel, intervention: Intervention | None = None, store=None) -> dict[str, float]:
    """Non-math accuracy on the held-out facts and on the sample half (the facts that can be protected), cached."""
    intervention = intervention or CLEAN
    samples_half, _ = language_split(NONMATH_SPLIT["split_seed"])

    def compute() -> pd.DataFrame:
        return pd.DataFrame([{"nonmath": nonmath_accuracy(model, intervention),
                              "nonmath_samples_half": facts_accuracy(model, samples_half, intervention)}])

    spec = {"model": model.fingerprint, "intervention": intervention.key, "nonmath": NONMATH_SPLIT}
    row = _cached(store, "mathneuro-nonmath", spec, compute).iloc[0]
    return {key: float(value) for key, value in row.items()}


def bootstrap_mean(values: np.ndarray, seed: int = 0, n_boot: int = BOOTSTRAP,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean over the values (prompts). Values take few
    distinct levels here (0/1, or -1/0/1 for a paired difference), so each resample is drawn exactly as the counts
    of those levels (a multinomial): the bootstrap distribution itself, at no cost per prompt."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    levels, counts = np.unique(values, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(values.size, counts / values.size, size=n_boot)
    means = draws @ levels / values.size
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def builtin_masks(model: LoadedModel, k: float, k_general: float | None = None, samples: SampleSet | None = None,
                  store=None) -> Masks:
    """MathNeuro's math-specific masks of ``model`` (built-in 100 samples unless ``samples``; norms cached)."""
    samples = samples or load_samples(n=100, max_single_token=model.max_single_token)
    math_scores, general_scores = scores_for(model, samples, store)
    return math_specific(math_scores, general_scores, k, k_general)


def scaling_study(model: LoadedModel, conditions: Sequence[Condition], store=None, k: float = 0.01,
                  k_general: float | None = None, factors: Sequence[float] = FACTORS, n_samples: int = 100,
                  seed: int = 0, progress: Progress | None = None) -> pd.DataFrame:
    """One row per (condition, factor, method): ``mathneuro`` (the math-specific weights of the condition's model
    x factor) or ``random`` (as many random weights per matrix, seeded, x the same factor); math accuracy with its
    bootstrap interval, the gain over clean with its paired bootstrap interval, held-out non-math accuracy, and on
    ``mathneuro`` rows ``vs_control``: its accuracy minus the random control's, paired per prompt, with its
    interval. ``progress`` counts evaluations."""
    if not factors:
        raise InputError("give at least one factor")
    rows = []
    total, done = len(conditions) * (1 + 2 * len(factors)), 0
    for cond in conditions:
        cmodel = condition_model(model, cond)
        samples = load_samples(n=n_samples, seed=seed, max_single_token=cmodel.max_single_token)
        specific = builtin_masks(cmodel, k, k_general, samples, store)
        sets = {"mathneuro": specific, "random": random_masks(specific, seed)}
        clean = correct_per_prompt(cmodel, cond, None, store).astype(int)
        clean_nonmath = stored_nonmath(cmodel, None, store)["nonmath"]
        done += 1
        report(progress, done, total, cond.label)
        for factor in factors:
            edited = {}
            for method, masks in sets.items():
                iv = edit(masks, factor, f"mathneuro {method} K={k:g} x{factor:g}", "mathneuro-scaling")
                edited[method] = correct_per_prompt(cmodel, cond, iv, store).astype(int)
                acc, lo, hi = bootstrap_mean(edited[method], seed)
                gain, gain_lo, gain_hi = bootstrap_mean(edited[method] - clean, seed)
                rows.append({"condition": cond.label, "factor": factor, "method": method,
                             "weights": mask_counts(masks), "prompts": len(clean), "clean": float(clean.mean()),
                             "accuracy": acc, "acc_lo": lo, "acc_hi": hi, "gain": gain, "gain_lo": gain_lo,
                             "gain_hi": gain_hi, "nonmath": stored_nonmath(cmodel, iv, store)["nonmath"],
                             "clean_nonmath": clean_nonmath})
                done += 1
                report(progress, done, total, cond.label)
            gap = bootstrap_mean(edited["mathneuro"] - edited["random"], seed)
            rows[-2].update(zip(("vs_control", "vs_control_lo", "vs_control_hi"), gap))
    return pd.DataFrame(rows)


def best_scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Per condition: the factor whose math-specific scaling gains most, that gain and its interval, and the random
    control's gain and interval at the same factor; ``beats_control``: the gain's interval lies above the
    control's; ``vs_control``: the paired difference to the control with its interval. (The best of several
    factors on the same prompts is an optimistic pick: read its interval so.)"""
    rows = []
    for cond, part in table.groupby("condition", sort=False):
        ours = part[part["method"] == "mathneuro"]
        best = ours.loc[ours["gain"].idxmax()]
        control = part[(part["method"] == "random") & (part["factor"] == best["factor"])].iloc[0]
        rows.append({"condition": cond, "clean": best["clean"], "best_factor": best["factor"],
                     "gain": best["gain"], "gain_lo": best["gain_lo"], "gain_hi": best["gain_hi"],
                     "control_gain": control["gain"], "control_lo": control["gain_lo"],
                     "control_hi": control["gain_hi"], "beats_control": bool(best["gain_lo"] > control["gain_hi"]),
                     "vs_control": best["vs_control"], "vs_control_lo": best["vs_control_lo"],
                     "vs_control_hi": best["vs_control_hi"],
                     "gain_x1.1": float(ours.loc[ours["factor"] == 1.1, "gain"].iloc[0])
                     if (ours["factor"] == 1.1).any() else math.nan})
    return pd.DataFrame(rows)


def math_conditions(eval_prompts: int, seed: int = 0) -> list[Condition]:
    """The four operators' training grids (plain), a seeded subset of ``eval_prompts`` each (0: full grids)."""
    return [Condition(op=op, prompts=eval_prompts, seed=seed) for op in OPERATORS]


def pruned_accuracy(model: LoadedModel, intervention: Intervention | None, eval_prompts: int = 500,
                    store=None) -> dict[str, float]:
    """Per operator, the mean over the four (``math``), held-out non-math and the sample half's, all cached."""
    out = {c.op: float(correct_per_prompt(model, c, intervention, store).mean())
           for c in math_conditions(eval_prompts)}
    out["math"] = sum(out[op] for op in OPERATORS) / len(OPERATORS)
    return {**out, **stored_nonmath(model, intervention, store)}


def jaccard(a: Masks, b: Masks) -> float:
    """|A and B| / |A or B| over every matrix together (1.0 for two empty sets)."""
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    either = sum(int((a[n] | b[n]).sum()) for n in a)
    return 1.0 if either == 0 else both / either


def single_sample_study(model: LoadedModel, store=None, pairs: int = 20, k: float = 0.01,
                        k_general: float | None = None, reference_samples: int = 100, eval_prompts: int = 500,
                        seed: int = 0, progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per pair, summary): ``pairs`` single-sample masks (one math and one non-math sample, seeds 0..pairs-1, as
    ``--single-sample``) pruned beside the ``reference_samples``-sample masks: math drop (mean of the four
    operators' accuracy on ``eval_prompts`` per grid), held-out non-math change, weights and Jaccard to the
    reference. The summary: mean, min and max over the pairs beside the reference's figures."""
    clean = pruned_accuracy(model, None, eval_prompts, store)
    total = pairs + 1

    def measured(masks: Masks, label: str) -> dict:
        after = pruned_accuracy(model, edit(masks, 0.0, label, "mathneuro-single"), eval_prompts, store)
        return {"weights": mask_counts(masks), "math": after["math"], "math_drop": after["math"] - clean["math"],
                "nonmath": after["nonmath"], "nonmath_change": after["nonmath"] - clean["nonmath"],
                **{f"acc {op}": after[op] for op in OPERATORS}}

    reference = builtin_masks(model, k, k_general, load_samples(n=reference_samples, seed=seed,
                                                                max_single_token=model.max_single_token), store)
    ref_row = {"pair": "reference", "math_sample": f"{reference_samples} samples",
               "general_sample": f"{reference_samples} samples", **measured(reference, "reference"), "jaccard": 1.0}
    report(progress, 1, total, "reference masks")
    rows = []
    for i in range(pairs):
        samples = load_samples(single=True, seed=seed + i, max_single_token=model.max_single_token)
        masks = builtin_masks(model, k, k_general, samples, store)
        rows.append({"pair": str(seed + i), "math_sample": samples.math[0], "general_sample": samples.general[0],
                     **measured(masks, f"single {seed + i}"), "jaccard": jaccard(masks, reference)})
        report(progress, i + 2, total, "single-sample pairs")
    per_pair = pd.DataFrame([ref_row, *rows])
    singles = per_pair[per_pair["pair"] != "reference"]
    summary = pd.DataFrame([{"metric": metric, "mean": float(singles[metric].mean()),
                             "min": float(singles[metric].min()), "max": float(singles[metric].max()),
                             f"{reference_samples} samples": float(ref_row[metric])}
                            for metric in ("math_drop", "nonmath_change", "weights", "jaccard")])
    return per_pair, summary


def frontier(model: LoadedModel, samples: SampleSet, ks: Sequence[float], k_generals: Sequence[float | None],
             store=None, eval_prompts: int = 500, tolerance: float = 0.05,
             progress: Progress | None = None) -> pd.DataFrame:
    """Pruning at every (K, K_general): weights, math (mean of the four operators on ``eval_prompts`` per grid) and
    its drop, held-out non-math and its change, the sample half's non-math (the facts that could be protected), and
    ``within``: non-math within ``tolerance`` of clean. ``k_generals`` may hold None (= K, as published); ``series``
    names which K-general a row belongs to."""
    math_scores, general_scores = scores_for(model, samples, store)
    clean = pruned_accuracy(model, None, eval_prompts, store)
    grid = [(k, kg) for kg in k_generals for k in ks]
    rows = []
    for i, (k, kg) in enumerate(grid):
        masks = math_specific(math_scores, general_scores, k, kg)
        after = pruned_accuracy(model, edit(masks, 0.0, f"frontier K={k:g}", "mathneuro-frontier"), eval_prompts,
                                store)
        change = after["nonmath"] - clean["nonmath"]
        rows.append({"k": k, "k_general": k if kg is None else kg,
                     "series": "K-general = K" if kg is None else f"K-general {kg:g}", "weights": mask_counts(masks),
                     "math": after["math"], "math_drop": after["math"] - clean["math"], "nonmath": after["nonmath"],
                     "nonmath_change": change, "nonmath_samples_half": after["nonmath_samples_half"],
                     "samples_half_change": after["nonmath_samples_half"] - clean["nonmath_samples_half"],
                     "within": bool(change >= -tolerance - 1e-12)})
        report(progress, i + 1, len(grid), "frontier")
    return pd.DataFrame(rows)


def frontier_best(table: pd.DataFrame) -> pd.Series | None:
    """The largest math drop whose non-math stays within the tolerance (None if no point does)."""
    ok = table[table["within"]]
    return None if ok.empty else ok.sort_values(["math_drop", "nonmath_change"], ascending=[True, False]).iloc[0]


def conditions_table(model: LoadedModel, conditions: Sequence[Condition], store=None) -> pd.DataFrame:
    """Clean math accuracy with its bootstrap interval per condition (how much room each leaves)."""
    rows = []
    for cond in conditions:
        correct = correct_per_prompt(condition_model(model, cond), cond, None, store)
        acc, lo, hi = bootstrap_mean(correct, cond.seed)
        rows.append({"condition": cond.label, "prompts": len(correct), "accuracy": acc, "acc_lo": lo, "acc_hi": hi})
    return pd.DataFrame(rows)

