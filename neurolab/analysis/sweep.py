"""Operand-grid sweeps: the model's answer on every prompt of a grid, and the K maps of a selection of neurons.

A sweep is keyed by the model (weights and dtype), the grid and the intervention. Which neurons it records is a
:class:`NeuronSelection`: every neuron, the top-N per layer by importance (the paper analyses the top 200), an
explicit list, or none (answers only). Before computing, the plan (rows and bytes) is announced; for a model whose
full sweep would exceed :data:`FULL_SWEEP_LIMIT` the default selection is the top-N. Values go to the store's .npy
blocks as float16 (KV is computed at read time from K and the stored value lens). A neuron that is not stored is
computed on demand by a sweep of that one neuron, and stays cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import CLEAN, Intervention, parse_neurons
from ..capture.trace import Capture, default_batch_size, intervened, stream
from ..errors import InputError
from ..models.loading import LoadedModel
from ..progress import Progress, report
from ..store import Store, SweepKey
from ..tasks.grid import OperandGrid, PromptTemplate
from .importance import ensure_importance

SELECTION_MODES = ("auto", "all", "top", "list", "none")
#: above this many bytes of values, "auto" records the top-N neurons per layer instead of every neuron
FULL_SWEEP_LIMIT = 4 * 2**30
VALUE_BYTES = 2  # float16


@dataclass(frozen=True)
class NeuronSelection:
    """Which neurons a sweep records. ``layers`` restricts ``all``/``top`` (None: every layer); ``top`` ranks by the
    attribution-patching importance run (``n_prompts``, ``seed``) of the same sweep."""

    mode: str = "auto"
    top_n: int = 200
    neurons: tuple[tuple[int, int], ...] = ()
    layers: tuple[int, ...] | None = None
    n_prompts: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise InputError(f"neuron selection {self.mode!r}: use one of {', '.join(SELECTION_MODES)}")
        if self.mode == "list" and not self.neurons:
            raise InputError("an explicit neuron selection needs neurons, e.g. L3N12,L3N40")
        if self.top_n < 1:
            raise InputError("top-N must be at least 1")

    @classmethod
    def parse(cls, text: str | None, layers: Sequence[int] | None = None, **kwargs) -> NeuronSelection:
        """``auto`` (default), ``all``, ``none``, ``top`` / ``top:200``, or a list ``L3N12,L3N40``."""
        text = (text or "auto").strip().lower()
        chosen = None if layers is None else tuple(sorted(set(layers)))
        if text in ("auto", "all", "none", "top"):
            return cls(text, layers=chosen, **kwargs)
        if text.startswith("top:"):  # its N wins over a top_n in kwargs (the CLI always passes --top-n)
            try:
                kwargs["top_n"] = int(text[4:])
            except ValueError:
                raise InputError(f"--neurons {text!r}: write top:N, e.g. top:200") from None
            return cls("top", layers=chosen, **kwargs)
        return cls("list", neurons=parse_neurons(text), **kwargs)


@dataclass
class SweepPlan:
    """What a sweep will store: neurons per layer, values and bytes on disk (values + value lens)."""

    mode: str
    n_prompts: int
    per_layer: dict[int, int]

    @property
    def values(self) -> int:
        return self.n_prompts * sum(self.per_layer.values())

    def bytes(self, n_numbers: int) -> int:
        return self.values * VALUE_BYTES + sum(self.per_layer.values()) * n_numbers * 4

    def describe(self, n_numbers: int) -> str:
        neurons = sum(self.per_layer.values())
        return (f"{self.mode}: {self.n_prompts:,} prompts x {neurons:,} neurons in {len(self.per_layer)} layers = "
                f"{self.values:,} values, about {_size(self.bytes(n_numbers))} on disk")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def plan_sweep(n_layers: int, d_mlp: int, n_numbers: int, n_prompts: int, selection: NeuronSelection) -> SweepPlan:
    """The plan of a selection on a model's shape (no model needed: this is how a sweep's cost is estimated)."""
    layers = list(range(n_layers)) if selection.layers is None else list(selection.layers)
    mode = selection.mode
    if mode == "auto":
        full = SweepPlan("all", n_prompts, dict.fromkeys(layers, d_mlp))
        mode = "all" if full.bytes(n_numbers) <= FULL_SWEEP_LIMIT else "top"
    if mode == "all":
        return SweepPlan(mode, n_prompts, dict.fromkeys(layers, d_mlp))
    if mode == "top":
        return SweepPlan(mode, n_prompts, dict.fromkeys(layers, min(selection.top_n, d_mlp)))
    if mode == "list":
        counts: dict[int, int] = {}
        for layer, _ in selection.neurons:
            counts[layer] = counts.get(layer, 0) + 1
        return SweepPlan(mode, n_prompts, counts)
    return SweepPlan(mode, n_prompts, {})


@dataclass
class SweepResult:
    sweep_id: int
    n_prompts: int
    neurons: dict[int, list[int]]  # what the selection asked for, per layer
    chunks_computed: int
    chunks_total: int
    plan: SweepPlan | None = None
    layers: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = sorted(self.neurons)

    @property
    def cached(self) -> bool:
        """True when everything asked for was already in the store (nothing was computed)."""
        return self.chunks_computed == 0


def grid_for(model: LoadedModel, op: str, max_op: int = 100, template: PromptTemplate | None = None) -> OperandGrid:
    """The operator's grid for this model (kept: its prompts are rendered once, not on every toggle of a page)."""
    return _grid(op, max_op, model.max_single_token, template or PromptTemplate())


@lru_cache(maxsize=32)
def _grid(op: str, max_op: int, max_single_token: int, template: PromptTemplate) -> OperandGrid:
    return OperandGrid(op, max_op, max_single_token, template)


def sweep_key(model: LoadedModel, grid: OperandGrid, intervention: Intervention | None = None) -> SweepKey:
    return SweepKey(model.fingerprint, grid.op, grid.template.key, grid.max_op,
                    intervention=(intervention or CLEAN).key)


def find_sweep(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention | None = None
               ) -> int | None:
    """The id of this grid's sweep (under ``intervention``) in the store, if one was started."""
    return store.sweep_id(sweep_key(model, grid, intervention), len(grid), 0, create=False)


def open_sweep(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention,
                chunk_size: int | None = None) -> int:
    """The sweep's id, created when absent (its chunk size fixed then), with the model and intervention saved."""
    store.register_model(model.fingerprint, model.weights_fingerprint, model.dtype, model.revision, model.name,
                         model.source, model.adapter.family, model.n_layers, model.d_mlp, model.max_single_token)
    if intervention:
        store.save_intervention(intervention.to_json(), intervention.tensors())
    size = chunk_size or default_batch_size(model, grid.prompts, model.d_mlp)
    return store.sweep_id(sweep_key(model, grid, intervention), len(grid), size)


def _wanted(model: LoadedModel, store: Store, sweep_id: int, grid: OperandGrid, selection: NeuronSelection,
            plan: SweepPlan, intervention: Intervention) -> dict[int, list[int]]:
    """Layer -> the neurons the selection asks for (for ``top``, from the sweep's importance run)."""
    layers = list(plan.per_layer)
    for layer in [*layers, *(layer for layer, _ in selection.neurons)]:
        if not 0 <= layer < model.n_layers:
            raise InputError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    if plan.mode == "all":
        return {layer: list(range(model.d_mlp)) for layer in layers}
    if plan.mode == "list":
        wanted: dict[int, list[int]] = {}
        for layer, n in selection.neurons:
            if not 0 <= n < model.d_mlp:
                raise InputError(f"L{layer}N{n}: the model has neurons 0..{model.d_mlp - 1} per layer")
            wanted.setdefault(layer, []).append(n)
        return wanted
    if plan.mode == "top":
        importance = ensure_importance(model, store, sweep_id, grid, selection.n_prompts, selection.seed,
                                       intervention)
        return {layer: top_neurons(importance, layer, selection.top_n) for layer in layers}
    return {}


def top_neurons(importance: pd.DataFrame, layer: int, top_n: int) -> list[int]:
    """The layer's ``top_n`` neurons by importance, most important first."""
    rows = importance[importance["layer"] == layer].sort_values("rank")
    return [int(n) for n in rows["neuron"].head(top_n)]


def run_sweep(
    model: LoadedModel,
    store: Store,
    op: str,
    selection: NeuronSelection | None = None,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    intervention: Intervention | None = None,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    announce: Callable[[SweepPlan], None] | None = None,
    remote: bool | str = False,
) -> SweepResult:
    """Fill the store with the grid's answers and the selected neurons' K maps; resumes where it stopped.

    ``progress`` counts prompts; ``announce(plan)`` is called before anything is computed.
    The chunking of a sweep is fixed when it is first created.
    """
    selection = selection or NeuronSelection()
    intervention = intervention or CLEAN
    grid = grid_for(model, op, max_op, template)
    if not len(grid):
        raise InputError(f"the {op} grid with max_op={max_op} has no valid prompt")
    plan = plan_sweep(model.n_layers, model.d_mlp, len(model.number_token_ids), len(grid), selection)
    sweep_id = open_sweep(model, store, grid, intervention, chunk_size)
    if announce:
        announce(plan)
    wanted = _wanted(model, store, sweep_id, grid, selection, plan, intervention)
    stored = store.stored_neurons(sweep_id)
    missing = {layer: [n for n in ns if n not in stored.get(layer, set())] for layer, ns in wanted.items()}
    missing = {layer: ns for layer, ns in missing.items() if ns}
    computed = _compute(model, store, sweep_id, grid, missing, intervention, progress, remote)
    total = -(-len(grid) // store.chunk_size(sweep_id))
    return SweepResult(sweep_id, len(grid), wanted, computed, total, plan)


def _todo_chunks(store: Store, sweep_id: int, blocks: list[int], n_prompts: int) -> list[int]:
    """Chunks still lacking answers, or lacking in any of ``blocks``."""
    size = store.chunk_size(sweep_id)
    chunks = range(-(-n_prompts // size))
    answered = store.answered(sweep_id)
    todo = {c for c in chunks if not all(i in answered for i in range(c * size, min(n_prompts, (c + 1) * size)))}
    for block_id in blocks:
        done = store.block_chunks(block_id)
        todo |= {c for c in chunks if c not in done}
    return sorted(todo)


def _blocks_for(model: LoadedModel, store: Store, sweep_id: int, missing: dict[int, list[int]], n_prompts: int,
                intervention: Intervention) -> dict[int, tuple[int, list[int]]]:
    """Block id -> (layer, neurons) to fill: an interrupted block of exactly these neurons is resumed, else a new
    block is made (with its value lens, computed under the intervention's weight edits)."""
    found: dict[int, tuple[int, list[int]]] = {}
    for layer, neurons in missing.items():
        resumable = [row for row in store.blocks(sweep_id, layer).itertuples()
                     if not row.complete and row.lens_file is not None and list(row.neurons) == neurons]
        if resumable:
            found[int(resumable[-1].block_id)] = (layer, neurons)
            continue
        with intervened(model, intervention):
            lens = model.number_logit_lens(layer)[neurons].cpu().numpy()
        found[store.create_block(sweep_id, layer, neurons, n_prompts, lens)] = (layer, neurons)
    return found


def _compute(model: LoadedModel, store: Store, sweep_id: int, grid: OperandGrid, missing: dict[int, list[int]],
             intervention: Intervention, progress: Progress | None, remote: bool | str = False) -> int:
    """Run the chunks that lack answers or values of ``missing``; returns how many chunks were computed."""
    blocks = _blocks_for(model, store, sweep_id, missing, len(grid), intervention)  # one per layer
    todo = _todo_chunks(store, sweep_id, list(blocks), len(grid))
    size = store.chunk_size(sweep_id)
    total = len(grid)
    finished = total - sum(min(total, (c + 1) * size) - c * size for c in todo)
    report(progress, finished, total)
    if not todo:
        return 0
    answered = store.answered(sweep_id)
    done = {b: store.block_chunks(b) for b in blocks}
    answers = np.asarray(grid.answers)
    token_ids = torch.as_tensor(np.asarray(model.number_token_ids)[answers])[:, None]
    prompts = [p for c in todo for p in grid.prompts[c * size:(c + 1) * size]]
    tokens = torch.cat([token_ids[c * size:(c + 1) * size] for c in todo])

    def write(lo: int, hi: int, capture: Capture) -> None:
        nonlocal finished
        chunk = todo[lo // size]
        start, end = chunk * size, chunk * size + (hi - lo)
        filled = {}
        for block_id, (layer, _) in blocks.items():
            if chunk not in done[block_id]:
                store.write_block_values(block_id, start, end, capture.neurons[layer].numpy())
                filled[block_id] = chunk
        rows = None
        if not all(i in answered for i in range(start, end)):
            rows = answer_rows(model, grid, start, end, capture)
        store.write_chunk(sweep_id, filled, rows)
        finished += end - start
        report(progress, finished, total)

    stream(model, prompts, write, layers=missing, token_ids=tokens, intervention=intervention, batch_size=size,
           remote=remote, half=True)
    return len(todo)


@lru_cache(maxsize=8)
def vocabulary(tokenizer, size: int) -> np.ndarray:
    """Every token's string by id, for the ``size`` logits of a model (converting a grid's ids one by one costs
    ~10 ms); ids the tokenizer does not know (a padded embedding) read as None, as the tokenizer says."""
    return np.asarray(tokenizer.convert_ids_to_tokens(list(range(max(size, len(tokenizer))))), dtype=object)


def answer_rows(model: LoadedModel, grid: OperandGrid, lo: int, hi: int, capture: Capture) -> pd.DataFrame:
    """The store's prompt rows of prompts lo..hi from a run's capture (answer, top-1, probabilities, correct)."""
    answer_ids = np.asarray(model.number_token_ids)[np.asarray(grid.answers[lo:hi])]
    pairs = np.asarray(grid.pairs[lo:hi])
    return pd.DataFrame({
        "idx": np.arange(lo, hi),
        "op1": pairs[:, 0],
        "op2": pairs[:, 1],
        "answer": grid.answers[lo:hi],
        "prompt": grid.prompts[lo:hi],
        "top1": vocabulary(model.tokenizer, model.hf.config.get_text_config().vocab_size)[capture.top1],
        "top1_prob": capture.top1_prob.copy(),
        "answer_prob": capture.token_probs[:, 0].copy(),
        "correct": capture.top1 == answer_ids,
    })


def stored_answers(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention
                   ) -> pd.DataFrame | None:
    """The grid's stored answers under ``intervention`` when every prompt's is stored, else None."""
    sweep_id = find_sweep(model, store, grid, intervention)
    if sweep_id is None:
        return None
    rows = store.prompts(sweep_id)
    return rows if len(rows) == len(grid) else None


def store_answers(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention,
                  capture: Capture) -> int:
    """Write a whole grid's answers (computed elsewhere, e.g. side by side with other interventions) as the
    intervention's sweep of answers, in one transaction; returns the sweep id."""
    sweep_id = open_sweep(model, store, grid, intervention)
    store.write_chunk(sweep_id, {}, answer_rows(model, grid, 0, len(grid), capture))
    return sweep_id
