"""Neuron anatomy's figure kinds (the Anatomy page): anatomy-*."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...analysis.sweep import NeuronSelection, find_sweep, run_sweep
from ...anatomy.agreement import agreement_summary, method_scores
from ...anatomy.helix import helix_fits, neuron_helix, patch_the_fit
from ...anatomy.layer import layer_anatomy
from ...anatomy.shape import Operands, additive_decomposition
from ...anatomy.spectrum import is_complete
from ...anatomy.wiring import stored_connections
from ...capture.interventions import Intervention
from ...errors import InputError
from ...models.adapters import neuron_label, parse_neuron_label
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OP_NAMES
from ...viz import anatomy as anatomy_figures
from ..bundle import Export
from .base import GRID, REQUIRED, Kind, _export, _grid, checked_neuron, selection

ANATOMY_LAYER = {**GRID, "layer": REQUIRED}
ANATOMY_NEURON = {**GRID, "neuron": REQUIRED}
ANATOMY_LINKS = 4  # the strongest inputs and outputs the Anatomy page shows per direction


def anatomy_layer(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                  progress: Progress | None = None) -> tuple[pd.DataFrame, int]:
    """The layer's anatomy table and its sweep, as the Anatomy page makes them: every layer swept first (the
    wiring reads the others), then the layer's table (both cached in the store)."""
    chosen = selection("anatomy-shapes", {key: values.get(key) for key in ANATOMY_LAYER})
    grid = _grid(model, chosen)
    run_sweep(model, store, grid.op, NeuronSelection(), grid.max_op, grid.template, intervention, progress=progress)
    table = layer_anatomy(model, store, grid.op, chosen["layer"], "auto", grid.max_op, grid.template, intervention,
                          progress=progress)
    return table, find_sweep(model, store, grid, intervention)


@dataclass(frozen=True)
class NeuronAnatomy:
    """What the neuron figures draw: its layer's table row, its K map, and the grid's operands."""

    row: pd.Series
    k: np.ndarray
    operands: Operands
    complete: bool
    sweep_id: int


def anatomy_in(store: Store, table: pd.DataFrame, sweep_id: int, label: str, max_op: int) -> NeuronAnatomy:
    """One neuron of a layer's anatomy ``table`` (made on ``sweep_id``), read from the store."""
    layer, neuron = parse_neuron_label(label)
    label = neuron_label(layer, neuron)
    if label not in set(table["label"]):
        raise InputError(f"{label} is not among layer {layer}'s {len(table)} neurons with an anatomy")
    operands = Operands.from_prompts(store.cached_prompts(sweep_id))
    return NeuronAnatomy(table.set_index("label").loc[label], store.neuron_map(sweep_id, layer, neuron)[0], operands,
                         is_complete(operands, max_op), sweep_id)


def neuron_anatomy(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                   progress: Progress | None = None) -> NeuronAnatomy:
    """The selection's neuron: its layer's anatomy made (or read) first, as the page does."""
    chosen = selection("anatomy-decomposition", {key: values.get(key) for key in ANATOMY_NEURON})
    layer, _ = parse_neuron_label(chosen["neuron"])
    table, sweep_id = anatomy_layer(model, store, {**chosen, "layer": layer}, intervention, progress)
    return anatomy_in(store, table, sweep_id, chosen["neuron"], chosen["max_op"])


def _operand_frame(operands: Operands, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"op1": operands.a, "op2": operands.b, "answer": operands.r, **columns})


def decomposition_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                         anatomy: NeuronAnatomy) -> Export:
    """The map beside its additive decomposition; the data is each prompt's value and interaction."""
    chosen = selection("anatomy-decomposition", values)
    parts = additive_decomposition(anatomy.k, anatomy.operands)
    mu, _, _, interaction = parts
    data = _operand_frame(anatomy.operands, K=anatomy.k, additive=anatomy.k - interaction, interaction=interaction)
    figure = anatomy_figures.decomposition_figure(anatomy.k, anatomy.operands, chosen["max_op"], chosen["neuron"],
                                                  parts)
    return _export("anatomy-decomposition", model, chosen, intervention,
                   f"{chosen['neuron']}-decomposition-{OP_NAMES[chosen['op']]}", data, figure, {"mean": mu})


def spectrum_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                    anatomy: NeuronAnatomy) -> Export:
    """The spectrum; the data is, per quantity and period, the periodic share beside the residue AUROC."""
    chosen = selection("anatomy-spectrum", values)
    row = anatomy.row
    data = pd.DataFrame([{"quantity": name[6], "period": int(name.split(",")[1][:-1]), "share": float(row[name]),
                          "auroc": float(row[f"auroc{name[5:]}"])} for name in row.index if name.startswith("share[")])
    figure = anatomy_figures.spectrum_figure(anatomy.k, anatomy.operands, chosen["max_op"], row, anatomy.complete)
    return _export("anatomy-spectrum", model, chosen, intervention,
                   f"{chosen['neuron']}-spectrum-{OP_NAMES[chosen['op']]}", data, figure,
                   {"complete_grid": anatomy.complete})


def _anatomy_neuron_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        return export(model, chosen, intervention, neuron_anatomy(model, store, chosen, intervention, progress))
    return build


def helix_export(model: LoadedModel, values: dict, intervention: Intervention | None, frame: pd.DataFrame) -> Export:
    """The helix fit of a neuron's pre-activation (map, fit, residual); the data is :func:`neuron_helix`'s."""
    chosen = selection("anatomy-helix", values)
    return _export("anatomy-helix", model, chosen, intervention, f"{chosen['neuron']}-helix-{OP_NAMES[chosen['op']]}",
                   frame, anatomy_figures.helix_figure(frame, chosen["max_op"]))


def signs_export(model: LoadedModel, values: dict, intervention: Intervention | None, frame: pd.DataFrame) -> Export:
    chosen = selection("anatomy-signs", values)
    if "gate" not in set(frame["point"]):
        raise InputError(f"{model.name} is not gated: its neurons have no gate x up sign combinations")
    return _export("anatomy-signs", model, chosen, intervention, f"{chosen['neuron']}-signs-{OP_NAMES[chosen['op']]}",
                   frame, anatomy_figures.sign_map_figure(frame, chosen["max_op"]))


def _helix_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        """One pass over the grid for the neuron's pre-activation, then cached."""
        layer, neuron = checked_neuron(model, chosen["neuron"])
        frame = neuron_helix(model, store, _grid(model, chosen), layer, neuron, intervention)
        return export(model, chosen, intervention, frame)
    return build


def link_export(model: LoadedModel, values: dict, intervention: Intervention | None, link: Any,
                link_map: np.ndarray, operands: Operands) -> Export:
    """A linked neuron's thumbnail (``link``: a row of :func:`stored_connections`, as the page iterates them)."""
    chosen = selection("anatomy-link", values)
    title = f"{link.label} TWERA {link.twera:+.3f}"
    return _export("anatomy-link", model, chosen, intervention,
                   f"{chosen['neuron']}-{link.direction}-{link.label}-{OP_NAMES[chosen['op']]}",
                   _operand_frame(operands, K=link_map), anatomy_figures.thumbnail(link_map, operands,
                                                                                   chosen["max_op"], title),
                   {"direction": link.direction, "twera": float(link.twera)})


def _link(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
          progress: Progress | None) -> Export:
    anatomy = neuron_anatomy(model, store, chosen, intervention, progress)
    layer, neuron = parse_neuron_label(chosen["neuron"])
    links = stored_connections(model, store, anatomy.sweep_id, layer, neuron, count=ANATOMY_LINKS)
    found = links[links["label"] == chosen["link"]]
    if found.empty:
        raise InputError(f"{chosen['link']} is not among {chosen['neuron']}'s strongest links "
                         f"({', '.join(links['label']) or 'none'})")
    link = next(found.itertuples())
    link_map = store.neuron_map(anatomy.sweep_id, int(link.layer), int(link.neuron))[0]
    return link_export(model, chosen, intervention, link, link_map, anatomy.operands)


def shapes_export(model: LoadedModel, values: dict, intervention: Intervention | None, table: pd.DataFrame) -> Export:
    """Neurons per shape; the data is the layer's whole anatomy table."""
    chosen = selection("anatomy-shapes", values)
    return _export("anatomy-shapes", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-{OP_NAMES[chosen['op']]}", table,
                   anatomy_figures.shapes_figure(table))


def _shapes(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
            progress: Progress | None) -> Export:
    return shapes_export(model, chosen, intervention, anatomy_layer(model, store, chosen, intervention, progress)[0])


def fraction_table(table: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """The layer's table with each neuron's helix result fraction and NRMSE (of its first pre-activation map)."""
    pre = fits[fits["point"] == fits["point"].iloc[0]]
    return table.merge(pre[["neuron", "result_fraction", "nrmse"]].rename(
        columns={"result_fraction": "result_fraction_pre"}), on="neuron")


def fraction_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                    merged: pd.DataFrame) -> Export:
    chosen = selection("anatomy-fraction", values)
    data = merged[["layer", "neuron", "label", "shape", "result_fraction_pre", "nrmse", "direct_effect"]]
    return _export("anatomy-fraction", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-fraction-{OP_NAMES[chosen['op']]}", data,
                   anatomy_figures.fraction_vs_effect_figure(merged))


def _fraction(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    """One pass over the grid for the layer's pre-activations, then the fits (cached)."""
    table, _ = anatomy_layer(model, store, chosen, intervention, progress)
    fits = helix_fits(model, store, _grid(model, chosen), chosen["layer"], table["neuron"].tolist(), intervention)
    return fraction_export(model, chosen, intervention, fraction_table(table, fits))


def patch_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                 patched: pd.DataFrame) -> Export:
    chosen = selection("anatomy-patch", values)
    return _export("anatomy-patch", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-patch-fit-{chosen['count']}-{OP_NAMES[chosen['op']]}", patched,
                   anatomy_figures.patch_fit_figure(patched))


def _patch(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
           progress: Progress | None) -> Export:
    patched = patch_the_fit(model, store, _grid(model, chosen), chosen["layer"], chosen["count"], intervention,
                            progress)
    return patch_export(model, chosen, intervention, patched)


def agreement_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                     scores: pd.DataFrame) -> Export:
    """Attribution against exact activation patching per neuron; the summary (rho, overlap of the top ``count``)
    goes into the provenance's parameters, and the data is every neuron's pair of scores."""
    chosen = selection("anatomy-agreement", values)
    summary = agreement_summary(scores, chosen["count"])
    return _export("anatomy-agreement", model, chosen, intervention,
                   f"agreement-L{chosen['layer']}-{OP_NAMES[chosen['op']]}", scores,
                   anatomy_figures.agreement_figure(scores, summary), {"summary": summary.to_dict("records")})


def agreement_scores(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                     progress: Progress | None = None) -> pd.DataFrame:
    """Both methods' scores for the selection's layer (exact activation patching: a forward pass per neuron and
    prompt pair, then cached)."""
    chosen = selection("anatomy-agreement", values)
    if not 0 <= chosen["layer"] < model.n_layers:
        raise InputError(f"layer {chosen['layer']} does not exist; the model has layers 0..{model.n_layers - 1}")
    return method_scores(model, store, _grid(model, chosen), [chosen["layer"]], chosen["pairs"], chosen["seed"],
                         intervention, progress)


def _agreement(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
               progress: Progress | None) -> Export:
    return agreement_export(model, chosen, intervention, agreement_scores(model, store, chosen, intervention,
                                                                          progress))


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("anatomy-decomposition", ANATOMY_NEURON, "a neuron's map beside its additive decomposition",
         _anatomy_neuron_kind(decomposition_export)),
    Kind("anatomy-spectrum", ANATOMY_NEURON, "a neuron's spectrum: periodic shares beside residue AUROCs",
         _anatomy_neuron_kind(spectrum_export)),
    Kind("anatomy-helix", ANATOMY_NEURON, "the helix fit of a neuron's pre-activation", _helix_kind(helix_export)),
    Kind("anatomy-signs", ANATOMY_NEURON, "a gated neuron's gate x up sign combinations", _helix_kind(signs_export)),
    Kind("anatomy-link", {**ANATOMY_NEURON, "link": REQUIRED}, "one of a neuron's strongest inputs or outputs (TWERA)",
         _link),
    Kind("anatomy-shapes", ANATOMY_LAYER, "a layer's neurons per shape", _shapes),
    Kind("anatomy-fraction", ANATOMY_LAYER, "helix result fraction against direct effect", _fraction),
    Kind("anatomy-patch", {**ANATOMY_LAYER, "count": 20}, "accuracy with the top neurons patched to their fits",
         _patch),
    Kind("anatomy-agreement", {**ANATOMY_LAYER, "count": 20, "pairs": 50, "seed": 0},
         "attribution against exact activation patching per neuron", _agreement),
)
