"""MathNeuro (``../shared/science.md`` part B): math-specific weights from forward passes only.

- Scored weights (:func:`scored_weights`): every projection (``nn.Linear``, GPT-2's ``Conv1D``) inside the blocks
  the family adapter names (attention and MLP projections), and the LM head when it is a weight of its own;
  embeddings never, a tied LM head never (it *is* the embedding).
- Importance of ``W_ij`` = ``|W_ij| * sum_s ||X_j||_2`` (X_j: input feature j over sample s's real tokens):
  the norms come from one streaming pass per data set (:func:`neurolab.capture.norms.input_norms`, fp32), ``|W|``
  is applied once at the end, in the weight's own layout (the adapter's
  :func:`~neurolab.models.adapters.weight_as_out_in` knows which dimension is the input).
- Top-K per weight matrix separately: the ``int(K * numel)`` largest scores (rounded down; ties broken by the
  lower flat index: a stable descending sort). One pass yields every K.
- Math-specific = top-K(math) AND NOT top-K_general(non-math); ``k_general`` is K unless given (as published; a
  separate, larger one protects more non-math weights). Baselines: a seeded random set of the same count per matrix,
  and Wanda = top-K(math) without the subtraction.
- Edits are the core's :class:`~neurolab.capture.interventions.WeightEdit` steps (factor 0 prunes, 1.1 scales), one
  :class:`~neurolab.capture.interventions.Intervention` per mask set.
- Non-math accuracy is measured on the language task's held-out facts only
  (:func:`~neurolab.tasks.splits.language_split`): the built-in non-math samples come from the other half, so the
  method is never judged on the facts it protected. :data:`NONMATH_SPLIT` keys every result that measured it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..capture.interventions import CLEAN, Intervention, WeightEdit
from ..capture.norms import input_norms
from ..capture.trace import intervened
from ..models.adapters import get_module, is_projection, weight_as_out_in
from ..models.loading import LoadedModel
from ..progress import Progress, report, staged, within
from ..store.analyses import analysis_key
from ..tasks.arithmetic import OPERATORS, valid_pairs
from ..tasks.language import Fact
from ..tasks.samples import SPLIT_SEED, SampleSet
from ..tasks.splits import LANGUAGE_SPLIT, language_split
from .evaluation import arithmetic_score, nonmath_score

DEFAULT_KS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15)
Masks = dict[str, torch.Tensor]
#: Which facts non-math accuracy is measured on (the held-out half): in the spec of every result holding it.
NONMATH_SPLIT = {"split": LANGUAGE_SPLIT, "split_seed": SPLIT_SEED, "facts": "heldout"}


def scored_weights(model: LoadedModel) -> dict[str, torch.nn.Module]:
    """Parameter name (as ``model.hf.named_parameters()`` spells it) -> its projection module, in execution order."""
    hf = model.hf
    adapter = model.adapter
    found: dict[str, torch.nn.Module] = {}
    layers = get_module(hf, adapter.layers)
    for i in range(len(layers)):
        prefix = adapter.layer_path(i)
        for sub, module in get_module(hf, prefix).named_modules():
            if sub and is_projection(module):
                found[f"{prefix}.{sub}.weight"] = module
    head = get_module(hf, adapter.unembed)
    embed = get_module(hf, adapter.embed)
    if is_projection(head) and head.weight is not embed.weight \
            and head.weight.data_ptr() != embed.weight.data_ptr():
        found[f"{adapter.unembed}.weight"] = head
    names = dict(hf.named_parameters())
    return {name: m for name, m in found.items() if name in names and names[name] is m.weight}


def importance(modules: Mapping[str, torch.nn.Module], norms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """name -> fp32 ``|W| * norm`` in the weight's own layout (masks of it index the parameter), on the host."""
    scores = {}
    for name, module in modules.items():
        scores[name] = module.weight.detach().float().abs().cpu()  # abs: a copy, scaled in place below
        weight_as_out_in(module, scores[name]).mul_(norms[name].float())  # each input feature by its norm
    return scores


def top_k_mask(scores: torch.Tensor, k: float) -> torch.Tensor:
    """Boolean mask of the ``int(k * numel)`` largest entries (ties: lower flat index first)."""
    count = int(k * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if count > 0:
        order = torch.sort(scores.flatten(), descending=True, stable=True).indices
        mask[order[:count]] = True
    return mask.view(scores.shape)


def top_k_masks(scores: Mapping[str, torch.Tensor], k: float) -> Masks:
    return {name: top_k_mask(s, k) for name, s in scores.items()}


def math_specific(math_scores: Mapping[str, torch.Tensor], general_scores: Mapping[str, torch.Tensor],
                  k: float, k_general: float | None = None) -> Masks:
    """top-K(math) AND NOT top-K_general(non-math), per matrix (``k_general`` None: K, as published)."""
    kg = k if k_general is None else k_general
    return {name: top_k_mask(s, k) & ~top_k_mask(general_scores[name], kg) for name, s in math_scores.items()}


def random_masks(like: Mapping[str, torch.Tensor], seed: int = 0) -> Masks:
    """Per matrix, a seeded random set of as many entries as ``like`` selects there."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in like.items():
        chosen = torch.zeros(mask.numel(), dtype=torch.bool)
        chosen[torch.randperm(mask.numel(), generator=generator)[: int(mask.sum())]] = True
        out[name] = chosen.view(mask.shape)
    return out


def edit(masks: Mapping[str, torch.Tensor], factor: float, name: str = "", origin: str = "") -> Intervention:
    """One intervention multiplying every masked entry by ``factor`` (matrices with an empty mask are left out)."""
    steps = tuple(WeightEdit(p, m, factor) for p, m in masks.items() if bool(m.any()))
    return Intervention(steps, name, origin)


def _norms_path(store, key: str):
    return store.values_dir / "mathneuro" / f"{key}.safetensors"


def summed_norms(model: LoadedModel, texts: Sequence[str], data_spec: dict, store=None,
                 intervention: Intervention | None = None, batch_size: int = 32,
                 progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """The per-feature summed input norms of every scored weight over ``texts`` (cached in ``store`` by model
    fingerprint, data spec and intervention key)."""
    intervention = intervention or CLEAN
    modules = scored_weights(model)
    spec = {"model": model.fingerprint, "data": data_spec, "intervention": intervention.key,
            "weights": sorted(modules)}
    key = analysis_key("mathneuro-norms", spec)
    if store is not None and _norms_path(store, key).exists():
        return load_file(str(_norms_path(store, key)))
    norms = input_norms(model, modules, texts, batch_size, intervention, progress)
    if store is not None:
        path = _norms_path(store, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in norms.items()}, str(path))
    return norms


def scores_for(model: LoadedModel, samples: SampleSet, store=None, intervention: Intervention | None = None,
               batch_size: int = 32, progress: Progress | None = None) -> tuple[dict, dict]:
    """(math importance, non-math importance): one pass each, ``|W|`` of the weights under ``intervention``;
    ``progress`` counts the samples of both."""
    modules = scored_weights(model)
    total = len(samples.math) + len(samples.general)
    math_norms = summed_norms(model, samples.math, {**samples.spec, "set": "math"}, store, intervention,
                              batch_size, within(progress, 0, total))
    general_norms = summed_norms(model, samples.general, {**samples.spec, "set": "general"}, store, intervention,
                                 batch_size, within(progress, len(samples.math), total))
    with intervened(model, intervention):
        return importance(modules, math_norms), importance(modules, general_norms)


def facts_accuracy(model: LoadedModel, chosen: Sequence[Fact], intervention: Intervention | None = None) -> float:
    """Non-math accuracy over ``chosen`` facts (:func:`neurolab.analysis.evaluation.nonmath_score`)."""
    return nonmath_score(model, intervention, chosen).accuracy


def nonmath_accuracy(model: LoadedModel, intervention: Intervention | None = None) -> float:
    """Accuracy on the held-out facts (:data:`NONMATH_SPLIT`), never used as non-math samples."""
    return facts_accuracy(model, language_split(SPLIT_SEED)[1], intervention)


def full_grid_accuracy(model: LoadedModel, intervention: Intervention | None = None, max_op: int = 100,
                       ops: Sequence[str] = OPERATORS) -> dict[str, float]:
    """Accuracy per operator over its full valid grid (``max_op``), and over the held-out non-math facts."""
    out = {op: arithmetic_score(model, op, valid_pairs(op, max_op, model.max_single_token),
                                intervention=intervention).accuracy for op in ops}
    out["math"] = sum(out[op] for op in ops) / len(ops)
    out["nonmath"] = nonmath_accuracy(model, intervention)
    return out


def mask_counts(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def evaluate_masks(model: LoadedModel, math_scores: dict, general_scores: dict, ks: Sequence[float],
                   factor: float = 0.0, base: Intervention | None = None, seed: int = 0, max_op: int = 100,
                   baselines: bool = True, progress: Progress | None = None,
                   k_general: float | None = None) -> pd.DataFrame:
    """One row per (K, method) — ``clean``, ``mathneuro``, ``random`` (same count per matrix, seeded), ``wanda``
    (top-K math without subtraction) — with the count of edited weights and full-grid accuracies; ``progress``
    counts the K values."""
    base = base or CLEAN
    rows = [{"k": 0.0, "method": "clean", "factor": factor, "weights": 0, **full_grid_accuracy(model, base, max_op)}]
    methods = ("mathneuro", "random", "wanda") if baselines else ("mathneuro",)
    for i, k in enumerate(ks):
        specific = math_specific(math_scores, general_scores, k, k_general)
        sets = {"mathneuro": specific}
        if baselines:
            sets["random"] = random_masks(specific, seed)
            sets["wanda"] = top_k_masks(math_scores, k)
        for method in methods:
            iv = base + edit(sets[method], factor, f"mathneuro {method} K={k:g} x{factor:g}", "mathneuro")
            rows.append({"k": k, "method": method, "factor": factor, "weights": mask_counts(sets[method]),
                         **full_grid_accuracy(model, iv, max_op)})
        report(progress, i + 1, len(ks))
    return pd.DataFrame(rows)


def summary(math_scores: dict, general_scores: dict, ks: Sequence[float],
            k_general: float | None = None) -> pd.DataFrame:
    """Per K: scored weights, top-K counts of math and non-math, and math-specific count and fraction."""
    total = sum(s.numel() for s in math_scores.values())
    rows = []
    for k in ks:
        top_math = top_k_masks(math_scores, k)
        specific = math_specific(math_scores, general_scores, k, k_general)
        rows.append({"k": k, "scored": total, "top_k": mask_counts(top_math), "math_specific": mask_counts(specific),
                     "fraction": mask_counts(specific) / total})
    return pd.DataFrame(rows)


def run_mathneuro(model: LoadedModel, samples: SampleSet, ks: Sequence[float] = DEFAULT_KS, store=None,
                  factor: float | None = None, intervention: Intervention | None = None, seed: int = 0,
                  max_op: int = 100, batch_size: int = 32, progress: Progress | None = None,
                  k_general: float | None = None) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame | None]:
    """Scores, the per-K summary, and (with ``factor``) the evaluation table, cached in ``store`` when given;
    ``progress`` counts the samples, then the K values (stage "evaluating K"). ``k_general``: the non-math top-K
    fraction (None: each K)."""
    intervention = intervention or CLEAN
    math_scores, general_scores = scores_for(model, samples, store, intervention, batch_size, progress)
    spec = {"model": model.fingerprint, "data": samples.spec, "intervention": intervention.key, "ks": list(ks),
            "k_general": k_general}

    def keep(kind: str, extra: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """Tables go to the store's ``analyses`` (DuckDB keys, Parquet beside it) when there is a store."""
        return store.cached_frame(kind, {**spec, **extra}, compute) if store is not None else compute()

    table = keep("mathneuro-summary", {}, lambda: summary(math_scores, general_scores, ks, k_general))
    evaluation = None
    if factor is not None:
        settings = {"factor": factor, "seed": seed, "max_op": max_op, "nonmath": NONMATH_SPLIT}
        evaluation = keep("mathneuro-eval", settings,
                          lambda: evaluate_masks(model, math_scores, general_scores, ks, factor, intervention, seed,
                                                 max_op, progress=staged(progress, "evaluating K"),
                                                 k_general=k_general))
    return math_scores, general_scores, table, evaluation


def by_matrix(model: LoadedModel, masks: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Per scored matrix: its layer (None outside the blocks, e.g. the LM head), the module it belongs to, the count
    of selected weights and their share of the matrix."""
    prefix = model.adapter.layers + "."
    rows = []
    for name, mask in masks.items():
        layer, module = None, name.removesuffix(".weight")
        if name.startswith(prefix):
            index, _, module = name[len(prefix):].partition(".")
            layer, module = int(index), module.removesuffix(".weight")
        rows.append({"parameter": name, "layer": layer, "module": module, "selected": int(mask.sum()),
                     "share": float(mask.float().mean())})
    return pd.DataFrame(rows)


def stored_accuracy(model: LoadedModel, store, intervention: Intervention | None = None,
                    max_op: int = 100, compute: bool = True) -> dict[str, float] | None:
    """:func:`full_grid_accuracy`, computed once per (model, intervention, max_op) and kept in the store; with
    ``compute=False``, only what is stored (None if nothing is)."""
    intervention = intervention or CLEAN
    spec = {"model": model.fingerprint, "intervention": intervention.key, "max_op": max_op, "nonmath": NONMATH_SPLIT}
    if compute:
        frame = store.cached_frame("full-grid-accuracy", spec, lambda: pd.DataFrame(
            [full_grid_accuracy(model, intervention, max_op)]))
    else:
        frame = store.stored_frame("full-grid-accuracy", spec)
        if frame is None:
            return None
    return {key: float(value) for key, value in frame.iloc[0].items()}
