"""A layer's anatomy on one operator's grid: every stored neuron's shape, spectrum and separability in one table.

Everything here reads the sweep's K and KV maps from the store (``Store.layer_maps``: one read for all of a layer's
neurons) and computes over all neurons at once; the table is cached in the store under the model, grid,
intervention, neurons and thresholds. The paper's labels (the stored classification, when one was run) are joined
at read time, so a later classification shows up without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..analysis.sweep import NeuronSelection, grid_for, run_sweep
from ..capture.interventions import CLEAN, Intervention
from ..errors import InputError
from ..heuristics import RULES_VERSION
from ..models.adapters import neuron_label
from ..models.loading import LoadedModel
from ..progress import Progress, report, staged
from ..store import Store
from ..tasks.grid import PromptTemplate
from .shape import (
    LABELS,
    MODULI,
    Operands,
    ShapeThresholds,
    active_share,
    best_result_modulus,
    label_shapes,
    variance_explained,
)
from .spectrum import average_ranks, grid_spectra, is_complete, line_spectra, number_line_periods, residue_auroc

ANATOMY_VERSION = 2  # bump when a number of the table changes: it is part of every cached table's key


def shape_table(k: np.ndarray, operands: Operands, thresholds: ShapeThresholds | None = None,
                ranks: np.ndarray | None = None) -> pd.DataFrame:
    """The shape numbers and label of every row of ``k`` (post-activation maps ``[n, N]``): variance explained per
    key, the additive fit, the active share, the best result modulus with its residue AUROC, and the label.

    The AUROC (``mod_auroc``) is computed where it can change the label: for neurons whose best ``r mod n`` clears
    the modular threshold (NaN elsewhere; :func:`~.spectrum.line_spectra` has it for every neuron at T = 2, 5, 10,
    100). Ranking every map is what costs most, and most neurons are no modular candidates."""
    thresholds = thresholds or ShapeThresholds()
    k = np.asarray(k, np.float32)
    numbers = variance_explained(k, operands)
    numbers["active_share"] = active_share(k, thresholds.active_fraction)
    best, best_adj = best_result_modulus(numbers)
    numbers["best_mod"], numbers["best_mod_adj"] = best, best_adj
    auroc = np.full(len(numbers), np.nan)
    candidates = np.flatnonzero(best_adj >= thresholds.modular)
    if len(candidates):
        ranks = average_ranks(k[candidates]) if ranks is None else ranks[candidates]
        for n in MODULI:
            chosen = best[candidates] == n
            if chosen.any():
                auroc[candidates[chosen]] = residue_auroc(None, operands.r, n, ranks[chosen])[0]
    numbers["mod_auroc"] = auroc
    return pd.concat([label_shapes(numbers, thresholds), numbers], axis=1)


def anatomy_table(k: np.ndarray, kv: np.ndarray, lens: np.ndarray | None, operands: Operands, max_op: int,
                  thresholds: ShapeThresholds | None = None) -> pd.DataFrame:
    """:func:`shape_table` plus the spectra (line spectra and separability on every grid, the 2-D DFT on complete
    ones, the number-line lens periods when ``lens`` is given) and the direct effect (mean KV: the neuron's mean
    direct logit on the right answer, through the final norm's scale)."""
    ranks = average_ranks(k)
    parts = [shape_table(k, operands, thresholds, ranks), line_spectra(k, operands)]
    if is_complete(operands, max_op):
        parts.append(grid_spectra(k, operands, max_op))
    if lens is not None:
        parts.append(number_line_periods(lens))
    table = pd.concat(parts, axis=1)
    table["direct_effect"] = np.asarray(kv, np.float64).mean(1)
    return table


def layer_anatomy(model: LoadedModel, store: Store, op: str, layer: int, neurons: str | Sequence[int] = "all",
                  max_op: int = 100, template: PromptTemplate | None = None,
                  intervention: Intervention | None = None, thresholds: ShapeThresholds | None = None,
                  progress: Progress | None = None) -> pd.DataFrame:
    """The anatomy table of a layer's neurons (``neurons``: ``all``, ``top``/``top:N``, or neuron numbers) on the
    operator's grid; runs the sweep first when the maps are not stored (progress counts its prompts)."""
    intervention = intervention or CLEAN
    thresholds = thresholds or ShapeThresholds()
    if not 0 <= layer < model.n_layers:
        raise InputError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    if isinstance(neurons, str):
        selection = NeuronSelection.parse(neurons, layers=[layer])
        selection = NeuronSelection("list", neurons=tuple((layer, n) for n in selection.neurons if n[0] == layer)) \
            if selection.mode == "list" else selection
    else:
        selection = NeuronSelection("list", neurons=tuple((layer, int(n)) for n in neurons))
    sweep = run_sweep(model, store, op, selection, max_op, template, intervention, progress=staged(progress, "sweep"))
    chosen = [int(n) for n in sweep.neurons.get(layer, [])]
    if not chosen:
        raise InputError(f"no neuron of layer {layer} selected (the selection names other layers)")
    grid = grid_for(model, op, max_op, template)
    spec = {"fingerprint": model.fingerprint, "op": op, "max_op": max_op, "template": grid.template.key,
            "intervention": intervention.key, "layer": layer, "neurons": chosen, "thresholds": thresholds.spec(),
            "version": ANATOMY_VERSION}

    def compute() -> pd.DataFrame:
        report(progress, 0, 1, "anatomy")
        k, kv = store.layer_maps(sweep.sweep_id, layer, chosen)
        prompts = store.cached_prompts(sweep.sweep_id)
        lens = model.number_logit_lens(layer)[chosen].numpy()
        table = anatomy_table(k, kv, lens, Operands.from_prompts(prompts), max_op, thresholds)
        report(progress, 1, 1, "anatomy")
        return table.assign(layer=layer, neuron=chosen, label=[neuron_label(layer, n) for n in chosen])

    table = store.cached_frame("anatomy-shapes", spec, compute)
    return with_paper_labels(store, model, op, max_op, grid.template.key, intervention, table)


def with_paper_labels(store: Store, model: LoadedModel, op: str, max_op: int, template: str,
                      intervention: Intervention, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the paper's label beside each neuron's shape: its best-scoring matched heuristic (``heuristic``,
    ``family``, ``heuristic_score``) and every matched one (``heuristics``), from the stored classification (""
    when none)."""
    rows = store.atlas_rows(model.fingerprint, RULES_VERSION)
    rows = rows[(rows["op"] == op) & (rows["max_op"] == max_op) & (rows["template"] == template)
                & (rows["intervention"] == intervention.key)]
    if rows.empty:
        return table.assign(heuristic="", family="", heuristic_score=np.nan, heuristics="")
    rows = rows.sort_values("score", ascending=False)
    best = rows.drop_duplicates(["layer", "neuron"]).set_index(["layer", "neuron"])
    every = rows.groupby(["layer", "neuron"])["heuristic"].agg(lambda h: ", ".join(dict.fromkeys(h)))
    index = pd.MultiIndex.from_arrays([table["layer"], table["neuron"]])
    return table.assign(heuristic=best["heuristic"].reindex(index).fillna("").to_numpy(),
                        family=best["family"].reindex(index).fillna("").to_numpy(),
                        heuristic_score=best["score"].reindex(index).to_numpy(),
                        heuristics=every.reindex(index).fillna("").to_numpy())


def shape_counts(table: pd.DataFrame) -> pd.DataFrame:
    """How many neurons of each shape per layer (columns: the labels, in :data:`~.shape.LABELS` order)."""
    counts = table.groupby(["layer", "shape"]).size().unstack(fill_value=0)
    return counts.reindex(columns=[c for c in LABELS if c in counts.columns])


def paper_vs_shape(table: pd.DataFrame) -> pd.DataFrame:
    """How the paper's labels map onto shapes: per heuristic family of each neuron's best matched heuristic, the
    count of each shape (empty when nothing is classified)."""
    labelled = table[table["family"] != ""]
    if labelled.empty:
        return pd.DataFrame()
    return labelled.groupby(["family", "shape"]).size().unstack(fill_value=0)
