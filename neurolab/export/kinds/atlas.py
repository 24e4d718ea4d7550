"""The Heuristic Atlas' figure kind: classified neurons per layer and group."""

from __future__ import annotations

import pandas as pd

from ...analysis.atlas import atlas, counts, search
from ...capture.interventions import Intervention
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...viz.figures import (
    atlas_counts_figure,
)
from ..bundle import Export
from .base import Kind, _export, selection

ATLAS = {"ops": [], "layers": [], "groups": [], "kind": "all", "query": "", "min_score": 0.6, "min_lift": 1.0}


def atlas_rows(store: Store, model: LoadedModel, intervention: Intervention | None) -> pd.DataFrame:
    """The model's classifications made under ``intervention`` (the clean model's without one)."""
    frame = atlas(store, model.fingerprint)
    return frame[frame["intervention"] == (intervention.key if intervention else "none")]


def atlas_view(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The Atlas' rows that pass the selection's search and filters."""
    chosen = selection("atlas", values)
    view = search(frame, chosen["query"])
    view = view[(view["score"] >= chosen["min_score"]) & (view["lift"] >= chosen["min_lift"])]
    for column, wanted in (("op", chosen["ops"]), ("layer", chosen["layers"]), ("grp", chosen["groups"])):
        if wanted:
            view = view[view[column].isin(wanted)]
    if chosen["kind"] != "all":
        view = view[view["direct"] == (chosen["kind"] == "direct")]
    return view


def atlas_export(model: LoadedModel, values: dict, intervention: Intervention | None, view: pd.DataFrame) -> Export:
    chosen = selection("atlas", values)
    return _export("atlas", model, chosen, intervention, "atlas-counts", view, atlas_counts_figure(counts(view)))


def _atlas(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
           progress: Progress | None) -> Export:
    return atlas_export(model, chosen, intervention, atlas_view(atlas_rows(store, model, intervention), chosen))


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("atlas", ATLAS, "classified neurons per layer and group (the Atlas' filtered rows)", _atlas),
)
