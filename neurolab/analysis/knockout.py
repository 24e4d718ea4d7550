"""Causal checks of the heuristic neurons (``../shared/science.md`` part A, "Causal checks"): knockouts.

- :func:`heuristic_knockout`: ablate every neuron that implements one heuristic; accuracy on the correct prompts the
  heuristic applies to (its matching set) against as many other correct prompts (the paper, Llama3-8B on ``+``:
  0.56 related / 0.86 unrelated).
- :func:`prompt_knockout`: for each sampled correct prompt, ablate up to N neurons per layer whose heuristics apply
  to *that* prompt, against as many random neurons from the same layers' top-N; accuracy against N.

Both start from the operator's classification (:func:`~neurolab.analysis.classification.classify_operator`, computed
or read from the store) and keep their result in the store (:meth:`~neurolab.store.Store.cached_frame`) under a spec
naming the model, grid, intervention, classification settings, the classifier's rules version and every setting.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import CLEAN, GridRef, Intervention, ablation
from ..capture.trace import RowMask, run
from ..errors import InputError
from ..heuristics import RULES_VERSION, parse
from ..models.loading import LoadedModel
from ..progress import Progress, report, staged
from ..store import Store
from ..tasks.grid import OperandGrid, PromptTemplate
from .classification import Classification, ClassifySettings, classify_operator
from .sweep import grid_for, top_neurons

#: bumped whenever what these analyses compute changes; part of every cached spec
VERSION = 1
#: science.md's N of the prompt knockout: 0, 5, ..., 100 neurons per layer
DEFAULT_NS = tuple(range(0, 101, 5))
HEURISTIC_COLUMNS = ["heuristic", "group", "direct", "neurons", "related_prompts", "related_accuracy",
                     "unrelated_prompts", "unrelated_accuracy"]


def analysis_spec(model: LoadedModel, grid: OperandGrid, intervention: Intervention, settings: ClassifySettings,
                  layers: Sequence[int] | None, **extra) -> dict:
    """What a result built on a classification depends on: model (weights + dtype), grid, intervention, the
    classification's settings and layers, the classifier's rules, this module's version, and ``extra``."""
    return {"version": VERSION, "fingerprint": model.fingerprint, "op": grid.op, "max_op": grid.max_op,
            "template": grid.template.key, "intervention": intervention.key, "settings": settings.key(),
            "rules": RULES_VERSION, "layers": None if layers is None else sorted(set(layers)), **extra}


def classification(model: LoadedModel, store: Store, grid: OperandGrid, settings: ClassifySettings,
                   layers: Sequence[int] | None, intervention: Intervention, progress: Progress | None
                   ) -> Classification:
    """The operator's classification (stored after its first run), reporting as stage "classify: ..."."""
    return classify_operator(model, store, grid.op, grid.max_op, grid.template, settings, layers=layers,
                             intervention=intervention,
                             progress=staged(progress, "classify"))


def correct_answers(model: LoadedModel, prompts: Sequence[str], answers: np.ndarray,
                    intervention: Intervention | None = None, row_mask: RowMask | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(correct [n] bool, answer probability [n]) of ``prompts`` under ``intervention`` (and ``row_mask``)."""
    if not len(prompts):
        return np.zeros(0, bool), np.zeros(0, np.float32)
    ids = torch.as_tensor(np.asarray(model.number_token_ids)[np.asarray(answers)])
    capture = run(model, list(prompts), (), token_ids=ids[:, None], intervention=intervention, row_mask=row_mask)
    return capture.top1 == ids.numpy(), capture.token_probs[:, 0]


def _rng(seed: int, label: str) -> np.random.Generator:
    """A generator fixed by the seed and a label (so one heuristic's sample does not depend on the others)."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def _grid_values(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(frame[c].to_numpy() for c in ("op1", "op2", "answer"))


def heuristic_knockout(
    model: LoadedModel,
    store: Store,
    op: str,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    settings: ClassifySettings | None = None,
    min_neurons: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    layers: Sequence[int] | None = None,
    mode: str = "zero",
    max_prompts: int | None = None,
    intervention: Intervention | None = None,
) -> pd.DataFrame:
    """Per heuristic with >= ``min_neurons`` matched neurons (among the classification's top-N per layer): ablate
    all of them (``mode`` "zero", the paper's, or "mean" over the grid; every position) and measure accuracy on

    - *related* prompts: the correct prompts (under ``intervention``) in the heuristic's matching set, at most
      ``max_prompts`` of them (a seeded sample; None: all);
    - *unrelated* prompts: a seeded sample of as many other correct prompts (fewer when fewer exist).

    One pass per heuristic over only those prompts. Rows sorted by neurons (descending), then name; columns
    :data:`HEURISTIC_COLUMNS`.
    """
    settings = settings or ClassifySettings()
    intervention = intervention or CLEAN
    if min_neurons < 1:
        raise InputError("min_neurons must be at least 1")
    if mode not in ("zero", "mean"):
        raise InputError(f"ablation mode {mode!r}: use zero or mean")
    grid = grid_for(model, op, max_op, template)
    spec = analysis_spec(model, grid, intervention, settings, layers, min_neurons=min_neurons, seed=seed,
                         mode=mode, max_prompts=max_prompts)

    def compute() -> pd.DataFrame:
        found = classification(model, store, grid, settings, layers, intervention, progress)
        prompts = store.prompts(found.sweep_id)
        correct = prompts["correct"].to_numpy(bool)
        op1, op2, result = _grid_values(prompts)
        matched = found.matched.drop_duplicates(["heuristic", "layer", "neuron"])
        sizes = matched.groupby("heuristic").size()
        chosen = sorted(sizes[sizes >= min_neurons].index, key=lambda h: (-sizes[h], h))
        ref = GridRef(op, max_op, grid.template.format, grid.template.fewshot, grid.template.seed)
        rows = []
        for i, name in enumerate(chosen):
            report(progress, i, len(chosen), "knockout")
            family, params = parse(name)
            applies = family.matching_set(params, op1, op2, result)
            rng = _rng(seed, name)
            related = np.flatnonzero(applies & correct)
            if max_prompts is not None and len(related) > max_prompts:
                related = np.sort(rng.choice(related, max_prompts, replace=False))
            others = np.flatnonzero(~applies & correct)
            unrelated = np.sort(rng.choice(others, min(len(related), len(others)), replace=False))
            rows_of = matched[matched["heuristic"] == name]
            neurons = list(zip(rows_of["layer"].astype(int), rows_of["neuron"].astype(int)))
            knock = ablation(neurons, mode, grid=ref if mode == "mean" else None, origin=f"heuristic {name}")
            both = np.concatenate([related, unrelated])
            ok, _ = correct_answers(model, [grid.prompts[j] for j in both], result[both], intervention + knock)
            first = rows_of.iloc[0]
            rows.append({"heuristic": name, "group": first["grp"], "direct": bool(first["direct"]),
                         "neurons": len(neurons), "related_prompts": len(related),
                         "related_accuracy": float(ok[:len(related)].mean()) if len(related) else np.nan,
                         "unrelated_prompts": len(unrelated),
                         "unrelated_accuracy": float(ok[len(related):].mean()) if len(unrelated) else np.nan})
        report(progress, len(chosen), len(chosen), "knockout")
        return pd.DataFrame(rows, columns=HEURISTIC_COLUMNS)

    return store.cached_frame("heuristic_knockout", spec, compute)


def _prompt_neurons(found: Classification, pool: dict[int, list[int]], op1: np.ndarray, op2: np.ndarray,
                    result: np.ndarray) -> dict[int, np.ndarray]:
    """Per layer ``[prompts, len(pool[layer])]``: how many of each pool neuron's matched heuristics apply to each
    prompt."""
    counts = {layer: np.zeros((len(op1), len(ns)), np.int32) for layer, ns in pool.items()}
    column = {layer: {n: j for j, n in enumerate(ns)} for layer, ns in pool.items()}
    matched = found.matched.drop_duplicates(["heuristic", "layer", "neuron"])
    for name, rows in matched.groupby("heuristic"):
        family, params = parse(name)
        applies = family.matching_set(params, op1, op2, result).astype(np.int32)
        for layer, neuron in zip(rows["layer"].astype(int), rows["neuron"].astype(int)):
            j = column.get(layer, {}).get(neuron)
            if j is not None:
                counts[layer][:, j] += applies
    return counts


def prompt_knockout(
    model: LoadedModel,
    store: Store,
    op: str,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    settings: ClassifySettings | None = None,
    ns: Sequence[int] = DEFAULT_NS,
    n_prompts: int = 200,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    layers: Sequence[int] | None = None,
    intervention: Intervention | None = None,
) -> pd.DataFrame:
    """Accuracy of ``n_prompts`` sampled correct prompts (seeded) when, per prompt and per classified layer, N of
    its neurons are zero-ablated at every position (one pass per N ablating a different set in each prompt's row,
    through ``run(..., row_mask=...)``), for each N in ``ns``:

    - arm "heuristic": the layer's top-N pool neurons (the classification's top-N by importance) whose matched
      heuristics apply to the prompt, ranked by how many of their heuristics apply (ties: more important first);
      fewer than N when fewer apply;
    - arm "random": as many neurons (per prompt and layer, the same count as the heuristic arm) drawn at random
      from the same layer's pool (a fixed random order per prompt and layer, so the sets grow with N).

    Columns: n, arm, accuracy, answer_prob (mean probability of the answer), neurons (mean ablated per prompt, all
    layers).
    """
    settings = settings or ClassifySettings()
    intervention = intervention or CLEAN
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 0 or n_prompts < 1:
        raise InputError("prompt knockout needs N >= 0 and n_prompts >= 1")
    grid = grid_for(model, op, max_op, template)
    spec = analysis_spec(model, grid, intervention, settings, layers, ns=ns, n_prompts=n_prompts, seed=seed)

    def compute() -> pd.DataFrame:
        found = classification(model, store, grid, settings, layers, intervention, progress)
        prompts = store.prompts(found.sweep_id)
        correct = np.flatnonzero(prompts["correct"].to_numpy(bool))
        rng = _rng(seed, "prompts")
        sample = np.sort(rng.choice(correct, min(n_prompts, len(correct)), replace=False))
        op1, op2, result = (v[sample] for v in _grid_values(prompts))
        pool = {layer: top_neurons(found.importance, layer, settings.top_n) for layer in found.layers}
        counts = _prompt_neurons(found, pool, op1, op2, result)
        order, available, shuffled = {}, {}, {}
        for layer, count in counts.items():
            order[layer] = np.argsort(-count, axis=1, kind="stable")  # pool order is importance order
            available[layer] = (count > 0).sum(1)
            shuffled[layer] = np.argsort(rng.random(count.shape), axis=1)
        texts = [grid.prompts[j] for j in sample] * 2
        answers = np.concatenate([result, result])
        rows = []
        for i, n in enumerate(ns):
            report(progress, i, len(ns), "knockout")
            masks: dict[int, torch.Tensor] = {}
            ablated = np.zeros(2 * len(sample))
            for layer, ids in pool.items():
                ids = np.asarray(ids)
                take = np.minimum(n, available[layer])
                mask = np.zeros((2 * len(sample), model.d_mlp), bool)
                for p in range(len(sample)):
                    mask[p, ids[order[layer][p, :take[p]]]] = True
                    mask[len(sample) + p, ids[shuffled[layer][p, :take[p]]]] = True
                ablated += np.concatenate([take, take])
                masks[layer] = torch.from_numpy(mask)
            ok, prob = correct_answers(model, texts, answers, intervention, masks if n else None)
            for arm, part in (("heuristic", slice(0, len(sample))), ("random", slice(len(sample), None))):
                rows.append({"n": n, "arm": arm, "accuracy": float(ok[part].mean()),
                             "answer_prob": float(prob[part].mean()), "neurons": float(ablated[part].mean())})
        report(progress, len(ns), len(ns), "knockout")
        return pd.DataFrame(rows, columns=["n", "arm", "accuracy", "answer_prob", "neurons"])

    return store.cached_frame("prompt_knockout", spec, compute)
