"""MathNeuro's math-specific weights against the heuristic neurons (issue 15, "Overlap with heuristic neurons").

- :func:`neuron_overlap`: for the MLP weights of each layer, how many math-specific parameters fall in the rows or
  columns of the neurons the classifier labelled, their share of the matrix's math-specific parameters, and the
  chance level (the fraction of the matrix those neurons' rows/columns occupy = labelled / d_mlp), with
  ``lift = share / chance``.
- :func:`ablation_vs_pruning`: the reverse view on one operator's grid: accuracy clean, with the heuristic neurons
  ablated, with MathNeuro's weights pruned, and with both (cached answer sweeps, see
  :func:`neurolab.analysis.ablation.ablate_grid`).

Which axis of an MLP matrix indexes the neurons is read from its shape and ``d_mlp``, not from module names: an
in-projection (up / gate, ``d_model -> d_mlp``) has the neurons as its outputs, the out projection
(``d_mlp -> d_model``) as its inputs; which dimension of the weight holds them, from the adapter's
:func:`~neurolab.models.adapters.out_in_axes` (GPT-2's ``Conv1D`` stores its weight transposed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..models.adapters import get_module, in_out_features, is_projection, out_in_axes
from ..models.loading import LoadedModel
from ..progress import Progress, staged
from ..store import Store
from ..tasks.grid import PromptTemplate
from .ablation import ablate_grid, neuron_ablation
from .mathneuro import edit

OVERLAP_COLUMNS = ["layer", "matrix", "role", "neuron_axis", "labelled", "d_mlp", "math_specific", "in_labelled",
                   "share", "chance", "lift"]


def mlp_matrices(model: LoadedModel, layer: int) -> list[tuple[str, str, int]]:
    """The MLP weights of ``layer``: (parameter name, role ``in``/``out``, the weight's dimension indexing neurons).

    Every projection inside the block's MLP (``layer_path(layer) + ".mlp"``) with ``d_mlp`` on one side counts;
    the role comes from the shape: ``d_mlp`` outputs = an in-projection, ``d_mlp`` inputs = the out projection (when
    ``d_model == d_mlp`` only the adapter's ``mlp_out_path`` is read as the out projection)."""
    adapter = model.adapter
    d_mlp = model.d_mlp
    mlp_path = adapter.layer_path(layer) + ".mlp"
    out_module = get_module(model.hf, adapter.mlp_out_path(layer))
    found = []
    for sub, module in get_module(model.hf, mlp_path).named_modules():
        if not sub or not is_projection(module):
            continue
        n_in, n_out = in_out_features(module)
        if n_in == d_mlp and (n_out != d_mlp or module is out_module):
            role = "out"
        elif n_out == d_mlp:
            role = "in"
        else:
            continue  # not a neuron-indexed matrix
        out_axis, in_axis = out_in_axes(module)
        found.append((f"{mlp_path}.{sub}.weight", role, out_axis if role == "in" else in_axis))
    if not any(role == "out" for _, role, _ in found):
        raise InputError(f"layer {layer}: no MLP out projection of {d_mlp} inputs under {mlp_path}")
    return found


def labelled_neurons(neurons: pd.DataFrame | Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """layer -> sorted distinct neurons, from a classification's ``matched`` frame or (layer, neuron) pairs."""
    if isinstance(neurons, pd.DataFrame):
        pairs = zip(neurons["layer"].to_numpy(), neurons["neuron"].to_numpy(), strict=True)
    else:
        pairs = neurons
    by_layer: dict[int, set[int]] = {}
    for layer, neuron in pairs:
        by_layer.setdefault(int(layer), set()).add(int(neuron))
    return {layer: sorted(found) for layer, found in sorted(by_layer.items())}


def neuron_overlap(model: LoadedModel, masks: Mapping[str, torch.Tensor],
                   classification_matched: pd.DataFrame | Iterable[tuple[int, int]],
                   layers: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per (layer, MLP matrix) in ``masks``: math-specific parameters in the matrix, those in the rows or
    columns of the labelled neurons (``in_labelled``), ``share`` of the former, ``chance`` (labelled / d_mlp, the
    fraction of the matrix their rows/columns occupy) and ``lift = share / chance`` (NaN where undefined).

    ``layers`` defaults to the layers with labelled neurons. Aggregate with :func:`overlap_by_layer`."""
    labelled = labelled_neurons(classification_matched)
    chosen = sorted(labelled) if layers is None else sorted(set(layers))
    d_mlp = model.d_mlp
    rows = []
    for layer in chosen:
        neurons = labelled.get(layer, [])
        if any(not 0 <= n < d_mlp for n in neurons):
            raise InputError(f"layer {layer}: neuron ids must be in 0..{d_mlp - 1}")
        index = torch.tensor(neurons, dtype=torch.long)
        for name, role, axis in mlp_matrices(model, layer):
            if name not in masks:
                continue
            mask = masks[name].to(torch.bool).cpu()
            total = int(mask.sum())
            inside = int(mask.index_select(axis, index).sum()) if neurons else 0
            rows.append({"layer": layer, "matrix": name, "role": role, "neuron_axis": axis,
                         "labelled": len(neurons), "d_mlp": d_mlp, "math_specific": total, "in_labelled": inside})
    return _ratios(pd.DataFrame(rows, columns=OVERLAP_COLUMNS[:-3]))


def _ratios(frame: pd.DataFrame) -> pd.DataFrame:
    total = frame["math_specific"].astype(float)
    frame["share"] = np.where(total > 0, frame["in_labelled"] / total.where(total > 0, 1.0), np.nan)
    frame["chance"] = frame["labelled"] / frame["d_mlp"]
    frame["lift"] = np.where(frame["chance"] > 0, frame["share"] / frame["chance"].where(frame["chance"] > 0, 1.0),
                             np.nan)
    return frame[OVERLAP_COLUMNS]


def overlap_by_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """All MLP matrices of a layer together (the chance level is the same labelled / d_mlp for each)."""
    grouped = frame.groupby("layer").agg(labelled=("labelled", "first"), d_mlp=("d_mlp", "first"),
                                         math_specific=("math_specific", "sum"), in_labelled=("in_labelled", "sum"))
    grouped = grouped.reset_index().assign(matrix="mlp (all)", role="all", neuron_axis=-1)
    return _ratios(grouped)


def ablation_vs_pruning(model: LoadedModel, store: Store, op: str, masks: Mapping[str, torch.Tensor],
                        heuristic_neurons: pd.DataFrame | Iterable[tuple[int, int]], max_op: int = 100,
                        mode: str = "zero", template: PromptTemplate | None = None,
                        progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy on ``op``'s grid: ``clean``, ``ablate heuristic neurons`` (``mode``), ``prune MathNeuro``
    (every masked weight x 0) and ``both`` (the two interventions composed), with the change from clean and the
    size of each edit. Each condition is a cached sweep of the grid's answers; ``progress`` reports each one's
    stages as "condition: stage"."""
    pairs = [(layer, n) for layer, found in labelled_neurons(heuristic_neurons).items() for n in found]
    if not pairs:
        raise InputError("no heuristic neurons to ablate")
    ablate = neuron_ablation(pairs, mode, name=f"heuristic: {len(pairs)} neurons", origin="heuristic")
    prune = edit(masks, 0.0, "mathneuro prune", "mathneuro")
    weights = int(sum(int(m.sum()) for m in masks.values()))
    conditions = {"ablate heuristic neurons": (ablate, len(pairs), 0), "prune MathNeuro": (prune, 0, weights),
                  "both": (ablate + prune, len(pairs), weights)}
    rows = []
    for label, (intervention, neurons, pruned) in conditions.items():
        summary = ablate_grid(model, store, op, intervention, max_op, template, control_seed=None,
                              progress=staged(progress, label)).summary()
        if not rows:
            rows.append({"condition": "clean", "neurons": 0, "weights": 0, "accuracy": summary["before"]})
        rows.append({"condition": label, "neurons": neurons, "weights": pruned, "accuracy": summary["after"]})
    frame = pd.DataFrame(rows)
    frame["delta"] = frame["accuracy"] - frame["accuracy"].iloc[0]
    return frame
