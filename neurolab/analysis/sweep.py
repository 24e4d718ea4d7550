"""Operand-grid sweeps: one batched capture per chunk of the grid, streamed into the store.

Per prompt, the model's answer (top-1 token, probability of the correct answer, correctness); per neuron of the
requested layers, the **K map** (activation at the last position) and the **KV map** (activation x the neuron's
value-vector logit on the prompt's correct answer: its direct contribution to the right answer). Only one chunk
is ever in memory, each chunk is committed with its progress marker, and a rerun computes only what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..capture.trace import run
from ..models.loading import LoadedModel
from ..store.connection import Store, SweepKey
from ..tasks.grid import OperandGrid, PromptTemplate

#: activations of one chunk kept under about this many bytes (K and KV for every requested layer)
CHUNK_BYTES = 256 * 2**20
MAX_CHUNK = 4096


@dataclass
class SweepResult:
    sweep_id: int
    n_prompts: int
    layers: list[int]
    chunks_computed: int
    chunks_total: int

    @property
    def cached(self) -> bool:
        """True when everything asked for was already in the store (nothing was computed)."""
        return self.chunks_computed == 0


def default_chunk_size(model: LoadedModel, n_layers: int) -> int:
    """Large chunks amortise the trace's fixed cost; the memory budget bounds them for large models."""
    per_prompt = max(1, n_layers) * model.d_mlp * 4 * 2
    return max(64, min(MAX_CHUNK, CHUNK_BYTES // per_prompt))


def sweep_key(model: LoadedModel, grid: OperandGrid) -> SweepKey:
    return SweepKey(model.fingerprint, grid.op, grid.template.key, grid.max_op)


def find_sweep(model: LoadedModel, store: Store, grid: OperandGrid) -> int | None:
    """The id of this grid's sweep in the store, if one was started."""
    return store.sweep_id(sweep_key(model, grid), len(grid), 0, create=False)


def run_sweep(
    model: LoadedModel,
    store: Store,
    op: str,
    layers: Sequence[int] | None = None,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    remote: bool | str = False,
) -> SweepResult:
    """Fill the store with the grid's answers and K/KV maps of ``layers`` (None = all); resumes where it stopped.

    ``progress(done, total)`` counts prompts. The chunking of a sweep is fixed when it is first created.
    """
    grid = OperandGrid.for_model(model, op, max_op, template)
    if not len(grid):
        raise ValueError(f"the {op} grid with max_op={max_op} has no valid prompt")
    layers = list(range(model.n_layers)) if layers is None else sorted(set(layers))
    for layer in layers:
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    store.register_model(model.fingerprint, model.name, model.source, model.adapter.family, model.n_layers,
                         model.d_mlp, model.max_single_token)
    sweep_id = store.sweep_id(sweep_key(model, grid), len(grid), chunk_size or default_chunk_size(model, len(layers)))
    size = int(store.sweep_info(sweep_id)["chunk_size"])
    n_chunks = math.ceil(len(grid) / size)
    done = store.done(sweep_id)
    todo = [c for c in range(n_chunks) if any((layer, c) not in done for layer in layers)]
    remaining = sum(min(len(grid), (c + 1) * size) - c * size for c in todo)
    finished = len(grid) - remaining
    if progress:
        progress(finished, len(grid))
    if not todo:
        return SweepResult(sweep_id, len(grid), layers, 0, n_chunks)
    lenses = {layer: model.number_logit_lens(layer) for layer in layers}
    answers = torch.tensor(grid.answers)
    for chunk in todo:
        lo, hi = chunk * size, min(len(grid), (chunk + 1) * size)
        need = [layer for layer in layers if (layer, chunk) not in done]
        capture = run(model, grid.prompts[lo:hi], layers=need, batch_size=hi - lo, remote=remote)
        chunk_answers = answers[lo:hi]
        maps = {}
        for layer in need:
            k = capture.neurons[layer]
            kv = k * lenses[layer][:, chunk_answers].T  # [prompts, d_mlp]
            maps[layer] = (k.numpy(), kv.numpy())
        store.write_chunk(sweep_id, chunk, _prompt_rows(model, grid, lo, hi, capture.logits), maps)
        finished += hi - lo
        if progress:
            progress(finished, len(grid))
    return SweepResult(sweep_id, len(grid), layers, len(todo), n_chunks)


def _prompt_rows(model: LoadedModel, grid: OperandGrid, lo: int, hi: int, logits: torch.Tensor) -> pd.DataFrame:
    probs = logits.softmax(-1)
    top_p, top_id = probs.max(-1)
    answer_ids = torch.tensor([model.number_token_ids[a] for a in grid.answers[lo:hi]])
    pairs = np.asarray(grid.pairs[lo:hi])
    return pd.DataFrame({
        "idx": np.arange(lo, hi),
        "op1": pairs[:, 0],
        "op2": pairs[:, 1],
        "answer": grid.answers[lo:hi],
        "prompt": grid.prompts[lo:hi],
        "top1": [model.token_str(i) for i in top_id.tolist()],
        "top1_prob": top_p.numpy(),
        "answer_prob": probs.gather(1, answer_ids[:, None])[:, 0].numpy(),
        "correct": (top_id == answer_ids).numpy(),
    })
