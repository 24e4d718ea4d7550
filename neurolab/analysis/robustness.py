"""Does a neuron's heuristic hold when the condition changes? Templates side by side, and any two conditions.

A condition is a model (a checkpoint, or another model of the same family) under a prompt template; its results are
:func:`~neurolab.analysis.dynamics.checkpoint_results` (cached per model fingerprint and template), so comparing two
checkpoints, two templates or two models reads the same stored frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from ..models.loading import LoadedModel
from ..progress import Progress, staged
from ..store import Store
from ..tasks.grid import TEMPLATES, PromptTemplate
from .dynamics import DynamicsSettings, checkpoint_results

KEYS = ["layer", "neuron", "heuristic"]


def templates_with(custom: str | None = None) -> dict[str, PromptTemplate]:
    """plain, spaced, fewshot, and ``custom`` (a format with {op1} {op} {op2}) when given."""
    chosen = {name: TEMPLATES[name] for name in ("plain", "spaced", "fewshot")}
    if custom:
        chosen["custom"] = PromptTemplate(custom)
    return chosen


@dataclass
class Robustness:
    """One operator's neurons under several templates: per template a summary row and its matches; the first
    template is the reference the others are compared with."""

    summary: pd.DataFrame  # one row per template (accuracy, shares, ablation), column "template"
    matches: pd.DataFrame  # matched (layer, neuron, heuristic) per template, column "template"
    share_top: int

    @property
    def templates(self) -> list[str]:
        return self.summary["template"].tolist()

    def _reference(self, significant: bool) -> pd.DataFrame:
        ref = self.matches[(self.matches["template"] == self.templates[0])
                           & (self.matches["importance_rank"] < self.share_top)]
        return ref[ref["significant"]] if significant else ref

    def survival(self) -> pd.DataFrame:
        """Per template: the share of the reference template's matches among its top neurons (same neuron, same
        heuristic) that also match under it, raw and among the significant ones."""
        rows = []
        for name in self.templates:
            row = {"template": name}
            for kind, significant in (("raw", False), ("significant", True)):
                ref = self._reference(significant)[KEYS]
                here = self.matches[self.matches["template"] == name]
                here = here[here["significant"]] if significant else here
                row[f"survive_{kind}"] = len(ref.merge(here[KEYS].drop_duplicates(), on=KEYS)) / len(ref) \
                    if len(ref) else np.nan
                row[f"pairs_{kind}"] = len(ref)
            rows.append(row)
        return pd.DataFrame(rows)

    def heuristics(self) -> pd.DataFrame:
        """Each reference match among the top neurons, its score under every template (NaN: lost there), and
        ``holds``/``lost``: the templates it holds or is lost under."""
        ref = self._reference(False)[[*KEYS, "importance_rank", "score"]].rename(columns={"score": self.templates[0]})
        for name in self.templates[1:]:
            here = self.matches[self.matches["template"] == name][[*KEYS, "score"]].rename(columns={"score": name})
            ref = ref.merge(here, on=KEYS, how="left")
        held = ref[self.templates].notna().to_numpy()
        names = np.array(self.templates)
        return ref.assign(holds=[", ".join(names[h]) for h in held], lost=[", ".join(names[~h]) for h in held],
                          survives=held.mean(axis=1)).sort_values(["importance_rank", "heuristic"],
                                                                  ignore_index=True)

    def card(self, layer: int, neuron: int) -> pd.DataFrame:
        """One neuron: every heuristic it matches under any template, with "holds under" and "lost under"."""
        mine = self.matches[(self.matches["layer"] == layer) & (self.matches["neuron"] == neuron)]
        rows = []
        for heuristic, part in mine.groupby("heuristic"):
            holds = [t for t in self.templates if t in set(part["template"])]
            rows.append({"heuristic": heuristic, "best_score": float(part["score"].max()),
                         "holds under": ", ".join(holds),
                         "lost under": ", ".join(t for t in self.templates if t not in holds)})
        return pd.DataFrame(rows, columns=["heuristic", "best_score", "holds under", "lost under"])


def template_robustness(model: LoadedModel, store: Store, op: str, templates: Mapping[str, PromptTemplate],
                        settings: DynamicsSettings | None = None, progress: Progress | None = None) -> Robustness:
    """The same model's results under each template (the first is the reference), each cached in the store."""
    if len(templates) < 2:
        raise InputError("template robustness compares at least two templates")
    settings = settings or DynamicsSettings()
    summaries, matches = [], []
    for name, template in templates.items():
        summary, found = checkpoint_results(model, store, op, template, settings, staged(progress, f"template {name}"))
        summaries.append(summary.assign(template=name, format=template.key))
        matches.append(found.assign(template=name))
    return Robustness(pd.concat(summaries, ignore_index=True), pd.concat(matches, ignore_index=True),
                      settings.share_top)


def compare(a: pd.DataFrame, b: pd.DataFrame, layer: int, neuron: int | None = None) -> pd.DataFrame:
    """Two conditions' matches (frames of :data:`~neurolab.analysis.dynamics.MATCH_COLUMNS`) side by side for one
    layer or one neuron: each (neuron, heuristic) with its score under A and B and where it holds (both, A only,
    B only)."""
    def pick(frame: pd.DataFrame) -> pd.DataFrame:
        chosen = frame[frame["layer"] == layer]
        return chosen if neuron is None else chosen[chosen["neuron"] == neuron]

    columns = [*KEYS, "score", "significant"]
    both = pick(a)[columns].merge(pick(b)[columns], on=KEYS, how="outer", suffixes=("_a", "_b"))
    status = np.where(both["score_a"].notna() & both["score_b"].notna(), "both",
                      np.where(both["score_a"].notna(), "A only", "B only"))
    return both.assign(holds=status).sort_values(["neuron", "holds", "heuristic"], ignore_index=True)
