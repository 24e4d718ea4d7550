"""When heuristics are born: the same analyses over a series of training checkpoints, cached per checkpoint.

A series is an ordered list of models: the embedded model's shipped checkpoints and the final model
(``embedded``), a hub model's revisions (``EleutherAI/pythia-70m@step1000,step143000``), or local folders
(``DIR1,DIR2``). Each checkpoint is its own model fingerprint, so every result (sweeps, importance, scores,
ablations) is stored under it, and one checkpoint's summary is one cached frame: a rerun of a series computes
nothing, and a killed one resumes at the checkpoint it was on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..capture.interventions import CLEAN
from ..errors import InputError
from ..heuristics import RULES_VERSION
from ..heuristics.families import GROUPS
from ..models.loading import LoadedModel, load_model
from ..progress import Progress, report, staged
from ..store import Store
from ..tasks.arithmetic import OPERATORS
from ..tasks.grid import PromptTemplate
from .ablation import ablate_grid, grid_answers, neuron_ablation
from .classification import ClassifySettings, classify_operator
from .significance import FDR, with_significance
from .sweep import grid_for

#: bump when what a checkpoint's summary holds changes, so old summaries are recomputed
DYNAMICS_VERSION = 1
#: the display groups a share is given for (range, modulo, pattern, other)
SHARE_GROUPS = tuple(sorted(set(GROUPS.values())))
MATCH_COLUMNS = ["layer", "neuron", "importance_rank", "heuristic", "grp", "score", "base_rate", "p_value", "q_value",
                 "significant"]


@dataclass(frozen=True)
class Checkpoint:
    """One model of a series: what :func:`load_model` takes, and where it sits in training."""

    label: str
    step: int
    name: str
    revision: str | None = None


@dataclass(frozen=True)
class DynamicsSettings:
    """What a checkpoint's summary depends on besides the model. The defaults fit the embedded model's budget
    (the whole ``+`` series in under 3 minutes on 2 cores): every neuron of the last layer is classified (so any
    neuron's map exists at every checkpoint), shares are over the ``share_top`` most important, and the ``ablate_n``
    most important neurons with a heuristic are ablated against a random control."""

    layers: tuple[int, ...] | None = None  # None: the model's last layer
    classify_top: int = 512
    share_top: int = 200
    ablate_n: int = 50
    max_op: int = 100
    threshold: float = 0.6
    seed: int = 0
    alpha: float = FDR

    def __post_init__(self) -> None:
        if min(self.classify_top, self.share_top, self.ablate_n, self.max_op) < 1:
            raise InputError("classify_top, share_top, ablate_n and max_op must be at least 1")
        if self.share_top > self.classify_top:
            raise InputError("share_top cannot exceed classify_top: shares are over classified neurons")
        if not 0 < self.alpha < 1:
            raise InputError("alpha (the FDR) must be in (0, 1)")

    def chosen_layers(self, model: LoadedModel) -> list[int]:
        layers = [model.n_layers - 1] if self.layers is None else sorted(set(self.layers))
        if any(not 0 <= layer < model.n_layers for layer in layers):
            raise InputError(f"layers {layers}: the model has layers 0..{model.n_layers - 1}")
        return layers

    def classify_settings(self, model: LoadedModel) -> ClassifySettings:
        return ClassifySettings(top_n=min(self.classify_top, model.d_mlp), threshold=self.threshold, seed=self.seed)


def _step_of(text: str, fallback: int) -> int:
    found = re.findall(r"\d+", text)
    return int(found[-1]) if found else fallback


def embedded_series() -> list[Checkpoint]:
    """The embedded model's shipped checkpoints, in training order, then the final model."""
    folder = Path(load_model("embedded").source)  # the shipped model's folder (loaded once per process anyway)
    recipe = json.loads((folder / "neurolab.json").read_text())["recipe"]
    found = sorted((folder / "checkpoints").glob("step-*"), key=lambda p: _step_of(p.name, 0))
    series = [Checkpoint(f"step {_step_of(p.name, 0)}", _step_of(p.name, 0), str(p)) for p in found]
    return [*series, Checkpoint(f"final (step {recipe['steps']})", int(recipe["steps"]), "embedded")]


def parse_series(text: str) -> list[Checkpoint]:
    """``embedded``, ``MODEL@rev1,rev2,...`` (hub revisions; the step is the revision's last number, as in
    Pythia's ``step1000``) or ``DIR1,DIR2,...`` (folders; the step is the folder name's last number), in the order
    given: the last is the model the others are compared with."""
    text = (text or "").strip()
    if text in ("embedded", "neurolab-arith"):
        return embedded_series()
    if "@" in text:
        name, _, revisions = text.partition("@")
        revs = [r.strip() for r in revisions.split(",") if r.strip()]
        if not name.strip() or not revs:
            raise InputError(f"series {text!r}: write MODEL@rev1,rev2 (e.g. EleutherAI/pythia-70m@step1000,step3000)")
        return [Checkpoint(r, _step_of(r, i), name.strip(), r) for i, r in enumerate(revs)]
    folders = [f.strip() for f in text.split(",") if f.strip()]
    if len(folders) < 2:
        raise InputError(f"series {text!r}: give embedded, MODEL@rev1,rev2 or at least two folders DIR1,DIR2")
    missing = [f for f in folders if not Path(f).expanduser().is_dir()]
    if missing:
        raise InputError(f"series: no model folder at {', '.join(missing)}")
    return [Checkpoint(Path(f).name, _step_of(Path(f).name, i), f) for i, f in enumerate(folders)]


def _spec(model: LoadedModel, op: str, template: PromptTemplate, settings: DynamicsSettings) -> dict:
    return {"fingerprint": model.fingerprint, "op": op, "template": template.key, "settings": asdict(settings),
            "rules": RULES_VERSION, "version": DYNAMICS_VERSION}


def _units(rows: pd.DataFrame) -> int:
    """How many distinct neurons (layer, neuron) the rows name."""
    return len(rows[["layer", "neuron"]].drop_duplicates())


def _shares(scores: pd.DataFrame, top: int) -> dict[str, float]:
    """Share of the ``top`` most important classified neurons with a heuristic (any, and per group), raw and
    significant, over all classified layers together."""
    chosen = scores[scores["importance_rank"] < top]
    total = max(_units(chosen), 1)
    found = {"top_neurons": float(_units(chosen))}
    for kind, rows in (("raw", chosen[chosen["matched"]]), ("significant", chosen[chosen["significant"]])):
        found[f"share_any_{kind}"] = _units(rows) / total
        for group in SHARE_GROUPS:
            found[f"share_{group}_{kind}"] = _units(rows[rows["grp"] == group]) / total
    return found


def _compute_checkpoint(model: LoadedModel, store: Store, op: str, template: PromptTemplate,
                        settings: DynamicsSettings, progress: Progress | None) -> tuple[dict, pd.DataFrame]:
    layers = settings.chosen_layers(model)
    row: dict = {}
    for i, other in enumerate(OPERATORS):  # accuracy per operator: the clean grid's answers (stored)
        report(progress, i, len(OPERATORS), "accuracy")
        answers = grid_answers(model, store, grid_for(model, other, settings.max_op, template), [CLEAN])[0]
        row[f"accuracy_{other}"] = float(answers["correct"].mean())
    if not row[f"accuracy_{op}"]:  # nothing to attribute importance over (an untrained checkpoint): no shares
        types = {"layer": "int64", "neuron": "int64", "importance_rank": "int64", "heuristic": "object",
                 "grp": "object", "significant": "bool"}
        empty = pd.DataFrame({c: pd.Series(dtype=types.get(c, "float64")) for c in MATCH_COLUMNS})
        return {**row, "top_neurons": 0.0, "accuracy_before": 0.0, "ablated": 0}, empty
    classification = classify_operator(model, store, op, settings.max_op, template,
                                       settings.classify_settings(model), layers, staged(progress, "classify"))
    grid = grid_for(model, op, settings.max_op, template)
    scores = with_significance(classification.scores, len(grid), alpha=settings.alpha)
    row.update(_shares(scores, settings.share_top), first_layer=classification.first_layer,
               sweep_id=classification.sweep_id)
    ranked = scores[scores["matched"]].sort_values("importance_rank")[["layer", "neuron"]].drop_duplicates()
    chosen = [tuple(map(int, n)) for n in ranked.head(settings.ablate_n).to_numpy()]
    row["ablated"] = len(chosen)
    if chosen:
        ablation = ablate_grid(model, store, op, neuron_ablation(chosen, origin="dynamics"), settings.max_op,
                               template, settings.seed, staged(progress, "ablation"))
        summary = ablation.summary()
        row.update(accuracy_before=summary["before"], accuracy_ablated=summary["after"],
                   accuracy_control=summary["control"])
    else:
        row.update(accuracy_before=row[f"accuracy_{op}"], accuracy_ablated=np.nan, accuracy_control=np.nan)
    matches = scores[scores["matched"]][MATCH_COLUMNS].reset_index(drop=True)
    return row, matches


def checkpoint_results(model: LoadedModel, store: Store, op: str, template: PromptTemplate | None = None,
                       settings: DynamicsSettings | None = None, progress: Progress | None = None,
                       compute: bool = True) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """One checkpoint's summary (one row: accuracy per operator, shares raw and significant, ablation vs control,
    the sweep it classified) and its matched (neuron, heuristic) pairs with p- and q-values; cached in the store.
    ``compute=False`` only reads: None when not stored yet (a page asks before offering to compute)."""
    template = template or PromptTemplate()
    settings = settings or DynamicsSettings()
    spec = _spec(model, op, template, settings)
    if not compute:
        found = store.stored_frame("dynamics-checkpoint", spec), store.stored_frame("dynamics-matches", spec)
        return None if found[0] is None or found[1] is None else found

    def summary() -> pd.DataFrame:
        row, matches = _compute_checkpoint(model, store, op, template, settings, progress)
        store.cached_frame("dynamics-matches", spec, lambda: matches)  # stored first: a summary implies its matches
        return pd.DataFrame([row])

    found = store.cached_frame("dynamics-checkpoint", spec, summary)
    return found, store.cached_frame("dynamics-matches", spec,
                                     lambda: _compute_checkpoint(model, store, op, template, settings, progress)[1])


@dataclass
class Dynamics:
    """A series' results: one summary row per checkpoint (in series order) and every checkpoint's matches."""

    summary: pd.DataFrame
    matches: pd.DataFrame  # MATCH_COLUMNS plus checkpoint, step

    def intersection(self) -> pd.DataFrame:
        """Per checkpoint: the share of the last checkpoint's (neuron, heuristic) matches already present (same
        layer, neuron and heuristic), raw and among the significant ones."""
        keys = ["layer", "neuron", "heuristic"]
        final_label = self.summary["checkpoint"].iloc[-1]
        rows = []
        for label in self.summary["checkpoint"]:
            row = {"checkpoint": label}
            for kind, pick in (("raw", lambda f: f), ("significant", lambda f: f[f["significant"]])):
                final = pick(self.matches[self.matches["checkpoint"] == final_label])[keys]
                here = pick(self.matches[self.matches["checkpoint"] == label])[keys]
                shared = len(final.merge(here.drop_duplicates(), on=keys))
                row[f"intersection_{kind}"] = shared / len(final) if len(final) else np.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """The summary with the intersection with the final model, one row per checkpoint."""
        return self.summary.merge(self.intersection(), on="checkpoint")

    def neuron(self, layer: int, neuron: int) -> pd.DataFrame:
        """One neuron's matched heuristics at every checkpoint."""
        found = self.matches[(self.matches["layer"] == layer) & (self.matches["neuron"] == neuron)]
        return found.sort_values(["step", "score"], ascending=[True, False])


def run_series(store: Store, series: Sequence[Checkpoint], op: str, template: PromptTemplate | None = None,
               settings: DynamicsSettings | None = None, progress: Progress | None = None,
               loader: Callable[[Checkpoint], LoadedModel] | None = None, compute: bool = True) -> Dynamics | None:
    """Every checkpoint's results (computed or read from the store), in series order. ``progress`` reports
    "checkpoint i/n <label>: <stage>"; ``loader`` loads a checkpoint (default :func:`load_model`, device auto).
    ``compute=False`` only reads: None unless every checkpoint is stored."""
    if op not in OPERATORS:
        raise InputError(f"unknown operator {op!r}; use one of {' '.join(OPERATORS)}")
    if not series:
        raise InputError("an empty series: give at least one checkpoint")
    loader = loader or (lambda c: load_model(c.name, revision=c.revision))
    summaries, matches = [], []
    for i, checkpoint in enumerate(series):
        stage = f"checkpoint {i + 1}/{len(series)} {checkpoint.label}"
        report(progress, 0, 1, f"{stage}: loading")
        model = loader(checkpoint)
        results = checkpoint_results(model, store, op, template, settings, staged(progress, stage), compute)
        if results is None:
            return None
        summary, found = results
        info = {"checkpoint": checkpoint.label, "step": checkpoint.step, "fingerprint": model.fingerprint}
        summaries.append(summary.assign(**info))
        matches.append(found.assign(checkpoint=checkpoint.label, step=checkpoint.step))
        report(progress, 1, 1, stage)
    return Dynamics(pd.concat(summaries, ignore_index=True), pd.concat(matches, ignore_index=True))
