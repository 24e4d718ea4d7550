"""Every figure of the dashboard by kind: one builder per chart, shared by the pages and ``python -m neurolab figure``.

A builder takes ``(model, store, selection, intervention, progress)`` and returns an :class:`Export` (figure, the
numbers behind it, provenance, file stem). It computes through the same core functions the pages call (cached in
the store) and draws with the same :mod:`neurolab.viz` functions, so a page's figure and the command line's are made
by one piece of code. Where a page already holds a result that is not cached in the store (a prompt's report, a grid
ablation, MathNeuro's masks), it hands it to the kind's ``*_export`` function, which the builder calls too.

A selection is a dict of plain values (the options of ``python -m neurolab figure KIND``); :func:`selection` checks
it and fills the defaults, and the complete selection goes into the provenance, so :func:`rebuild` makes the same
figure again.
"""

from __future__ import annotations

from ...capture.interventions import Intervention
from ...errors import InputError
from ...models.loading import LoadedModel, load_model
from ...progress import Progress
from ...store import Store
from ..bundle import Export
from ..provenance import Provenance
from . import anatomy, atlas, circuit, dynamics, grid, lab, mathneuro, prompt
from .anatomy import (
    ANATOMY_LAYER,
    ANATOMY_LINKS,
    ANATOMY_NEURON,
    NeuronAnatomy,
    agreement_export,
    agreement_scores,
    anatomy_in,
    anatomy_layer,
    decomposition_export,
    fraction_export,
    fraction_table,
    helix_export,
    link_export,
    neuron_anatomy,
    patch_export,
    shapes_export,
    signs_export,
    spectrum_export,
)
from .atlas import ATLAS, atlas_export, atlas_rows, atlas_view
from .base import DYNAMICS_FIGURES, GRID, KINDS, PARSE, REQUIRED, Kind, _kind, selection
from .circuit import CIRCUIT, failures_max_op
from .dynamics import (
    DYNAMICS,
    ROBUSTNESS,
    condition_sweep,
    dynamics_export,
    dynamics_map_export,
    dynamics_of,
    dynamics_settings,
    robustness_export,
    survival_table,
    templates_of,
)
from .grid import NEURON, folded_export, heatmap_export, neuron_map_for, overlay_export, result_export
from .lab import ABLATION, ablation_accuracy_export, ablation_export, ablation_of
from .mathneuro import SAMPLES, mathneuro_export, matrices_export, samples_of
from .prompt import PROMPT, bag_export, neurons_export, prediction_export, prompt_report

#: the kinds' public names (the family modules'), as ``neurolab.export.kinds.<name>``
__all__ = [
    "ABLATION", "ANATOMY_LAYER", "ANATOMY_LINKS", "ANATOMY_NEURON", "ATLAS", "CIRCUIT", "DYNAMICS", "DYNAMICS_FIGURES",
    "GRID", "KINDS", "NEURON", "PARSE", "PROMPT", "REQUIRED", "ROBUSTNESS", "SAMPLES", "Kind", "NeuronAnatomy",
    "ablation_accuracy_export", "ablation_export", "ablation_of", "agreement_export", "agreement_scores", "anatomy_in",
    "anatomy_layer", "atlas_export", "atlas_rows", "atlas_view", "bag_export", "build", "condition_sweep",
    "decomposition_export", "dynamics_export", "dynamics_map_export", "dynamics_of", "dynamics_settings",
    "failures_max_op", "folded_export", "fraction_export", "fraction_table", "heatmap_export", "helix_export",
    "link_export", "mathneuro_export", "matrices_export", "neuron_anatomy", "neuron_map_for", "neurons_export",
    "overlay_export", "patch_export", "prediction_export", "prompt_report", "rebuild", "result_export",
    "robustness_export", "samples_of", "selection", "shapes_export", "signs_export", "spectrum_export",
    "survival_table", "templates_of",
]

# the registry (:data:`KINDS`, held by ``base`` for :func:`selection`), in the order of the families
KINDS.update({kind.name: kind for family in (grid, atlas, lab, circuit, mathneuro, prompt, dynamics, anatomy)
              for kind in family.FIGURE_KINDS})


def build(kind: str, model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
          progress: Progress | None = None) -> Export:
    """The ``kind`` figure of ``model`` for the selection ``values``, under ``intervention``."""
    return _kind(kind)(model, store, values, intervention, progress)


def rebuild(provenance: Provenance, store: Store, progress: Progress | None = None) -> Export:
    """The figure a provenance describes, made again: its model (by name, revision, dtype and device; refused when
    the weights changed since), its intervention (masks from ``store``), then :func:`build`."""
    described = provenance.model
    model = load_model(described["name"], device=described["device"], dtype=described["dtype"],
                       revision=described.get("revision"))
    if model.fingerprint != described["fingerprint"]:
        raise InputError(f"{described['name']} is now {model.fingerprint}; the figure was made with "
                         f"{described['fingerprint']} (other weights or precision)")
    intervention = None
    if provenance.intervention:
        spec = provenance.intervention["spec"]
        tensors = store.load_intervention(provenance.intervention["key"])[1] if spec.get("tensors") else {}
        intervention = Intervention.from_json(spec, tensors)
    return build(provenance.kind, model, store, provenance.selection, intervention, progress)
