"""One neuron's activation map over an operand grid, read from the store, with its derived views."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..capture.interventions import Intervention
from ..errors import InputError
from ..heuristics import RULES_VERSION
from ..models.adapters import neuron_label
from ..models.loading import LoadedModel
from ..progress import Progress
from ..store import Store
from ..tasks.grid import PromptTemplate
from .sweep import NeuronSelection, run_sweep

MAP_KINDS = ("K", "KV")


@dataclass
class NeuronMap:
    """A neuron's K or KV values over a sweep's prompts; ``prompts`` has op1, op2, answer, top1, correct ..."""

    layer: int
    neuron: int
    kind: str
    prompts: pd.DataFrame
    values: np.ndarray  # [n_prompts], aligned with prompts

    @property
    def label(self) -> str:
        return neuron_label(self.layer, self.neuron)

    def matrix(self, max_op: int) -> np.ndarray:
        """``[max_op, max_op]`` with op1 as rows and op2 as columns; NaN where the pair is not on the grid."""
        grid = np.full((max_op, max_op), np.nan, dtype=np.float32)
        grid[self.prompts["op1"].to_numpy(), self.prompts["op2"].to_numpy()] = self.values
        return grid

    def folded(self, n: int) -> np.ndarray:
        """``[n, n]``: mean value by (op1 mod n, op2 mod n); NaN where no prompt falls."""
        rows, cols = self.prompts["op1"].to_numpy() % n, self.prompts["op2"].to_numpy() % n
        sums, counts = np.zeros((n, n)), np.zeros((n, n))
        np.add.at(sums, (rows, cols), self.values)
        np.add.at(counts, (rows, cols), 1)
        with np.errstate(invalid="ignore"):
            return sums / np.where(counts == 0, np.nan, counts)

    def by_result(self) -> pd.DataFrame:
        """Per result value: mean, min and max of the neuron over the prompts with that answer."""
        frame = pd.DataFrame({"answer": self.prompts["answer"].to_numpy(), "value": self.values})
        return frame.groupby("answer")["value"].agg(["mean", "min", "max", "count"]).reset_index()

    def to_frame(self) -> pd.DataFrame:
        """The map as a table (op1, op2, answer, model answer, correct, value), for CSV download."""
        columns = ["op1", "op2", "answer", "top1", "correct"]
        return self.prompts[columns].assign(layer=self.layer, neuron=self.neuron, **{self.kind: self.values})


def load_neuron_map(store: Store, sweep_id: int, layer: int, neuron: int, kind: str = "K",
                    prompts: pd.DataFrame | None = None) -> NeuronMap:
    """Read a neuron's map: one row of a memory-mapped block, with the sweep's block index, answers and prompt rows
    read from DuckDB once per sweep (see :mod:`neurolab.store.values`); ``prompts`` may be passed to reuse a read."""
    if kind not in MAP_KINDS:
        raise InputError(f"map kind must be one of {MAP_KINDS}")
    k, kv = store.neuron_map(sweep_id, layer, neuron)
    prompts = store.cached_prompts(sweep_id) if prompts is None else prompts
    if len(k) != len(prompts):
        raise InputError(f"{neuron_label(layer, neuron)} is not stored for sweep {sweep_id} (run the sweep first)")
    return NeuronMap(layer, neuron, kind, prompts, k if kind == "K" else kv)


def most_active(store: Store, sweep_id: int, layer: int, count: int = 20) -> pd.DataFrame:
    """The layer's neurons that vary most over the grid (by standard deviation of K), most first."""
    summary = store.layer_summary(sweep_id, layer)
    summary["label"] = [neuron_label(layer, n) for n in summary["neuron"]]
    return summary.sort_values("std_k", ascending=False).head(count).reset_index(drop=True)


def neuron_matches(store: Store, sweep_id: int, layer: int, neuron: int) -> pd.DataFrame:
    """The neuron's stored heuristic matches on this sweep (every classification run), best first."""
    return store.neuron_matches(sweep_id, layer, neuron, RULES_VERSION)


def neuron_map(model: LoadedModel, store: Store, op: str, layer: int, neuron: int, kind: str = "K",
               max_op: int = 100, template: PromptTemplate | None = None, intervention: Intervention | None = None,
               progress: Progress | None = None) -> NeuronMap:
    """Any neuron's map on any grid: read from the store, or computed on demand (one grid pass capturing that
    neuron, with the answers if they are missing) and cached, so every neuron of every model can be opened."""
    sweep = run_sweep(model, store, op, NeuronSelection("list", neurons=((layer, neuron),)), max_op, template,
                      intervention, progress=progress)
    return load_neuron_map(store, sweep.sweep_id, layer, neuron, kind)
