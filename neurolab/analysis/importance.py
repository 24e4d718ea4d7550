"""Which neurons matter for an operator: attribution patching, exact activation patching, and where heuristics start.

The method is that of ``../shared/science.md`` (part A, "Which neurons are analysed"): for a correct clean prompt
and a random counterfactual prompt with another answer, the indirect effect of patching a neuron's last-position
activation is IE = ½ [(p*(r') - p(r'))/p(r') + (p(r) - p*(r))/p*(r)]. Attribution patching linearises it at the
clean run, where its gradient is ½ ∇(log p(r') - log p(r)), so one forward and one backward pass score every
neuron: (a_corrupt - a_clean) · ∇. Neurons are ranked by mean + std of that score over prompts, as the published
code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import Intervention
from ..capture.trace import neuron_gradients, run
from ..errors import InputError
from ..models.loading import LoadedModel
from ..progress import Progress, report
from ..store import Store
from ..tasks.grid import OperandGrid

METHODS = ("attribution", "activation")


@dataclass(frozen=True)
class PromptPairs:
    """Clean (correct) prompts, their counterfactuals, and both answers' token ids."""

    clean: list[str]
    corrupt: list[str]
    clean_answer: torch.Tensor  # token ids r
    corrupt_answer: torch.Tensor  # token ids r'
    clean_value: torch.Tensor  # the integer answers of the clean prompts


def prompt_pairs(model: LoadedModel, grid: OperandGrid, n_prompts: int = 50, seed: int = 0,
                 correct: np.ndarray | None = None, intervention: Intervention | None = None) -> PromptPairs:
    """``n_prompts`` correct grid prompts and, for each, a random grid prompt with a different answer.

    The rule: walk a permutation of the grid drawn from ``seed`` and keep the first ``n_prompts`` prompts the model
    answers correctly (under ``intervention``). ``correct`` (per grid prompt) is the sweep's stored correctness when
    it has one; otherwise the walk probes correctness in small batches, so choosing the prompts never needs a pass
    over the whole grid, and both ways choose the same prompts.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(grid))
    answers = np.asarray(grid.answers)
    ids = np.asarray(model.number_token_ids)
    clean: list[int] = []
    step = max(64, 4 * n_prompts)
    for lo in range(0, len(order), step):
        batch = order[lo:lo + step]
        if correct is None:
            probe = run(model, [grid.prompts[i] for i in batch], intervention=intervention)
            ok = probe.top1 == ids[answers[batch]]
        else:
            ok = np.asarray(correct)[batch]
        clean.extend(int(i) for i in batch[ok])
        if len(clean) >= n_prompts:
            break
    clean = clean[:n_prompts]
    if not clean:
        raise InputError("the model answers no prompt of this grid correctly, so there is nothing to attribute")
    if len(np.unique(answers)) < 2:
        raise InputError("every prompt of this grid has the same answer: no counterfactual exists")
    corrupt = []
    for i in clean:
        j = int(rng.integers(len(grid)))
        while answers[j] == answers[i]:
            j = int(rng.integers(len(grid)))
        corrupt.append(j)
    return PromptPairs(
        clean=[grid.prompts[i] for i in clean], corrupt=[grid.prompts[j] for j in corrupt],
        clean_answer=torch.as_tensor(ids[answers[clean]]), corrupt_answer=torch.as_tensor(ids[answers[corrupt]]),
        clean_value=torch.as_tensor(answers[clean]),
    )


def stored_correctness(store: Store, sweep_id: int, n_prompts: int) -> np.ndarray | None:
    """The sweep's per-prompt correctness when every answer is stored, else None."""
    prompts = store.prompts(sweep_id)
    return prompts["correct"].to_numpy() if len(prompts) == n_prompts else None


def _summarise(scores: dict[int, torch.Tensor], method: str) -> pd.DataFrame:
    """Per neuron: mean and std of the per-prompt score, and the ranking score mean + std."""
    frames = []
    for layer, values in scores.items():  # values: [prompts, d_mlp]
        mean, std = values.mean(0), values.std(0, unbiased=False)
        frames.append(pd.DataFrame({
            "layer": layer, "neuron": np.arange(values.shape[1]), "mean": mean.numpy(), "std": std.numpy(),
            "score": (mean + std).numpy(),
        }))
    frame = pd.concat(frames, ignore_index=True)
    frame["rank"] = frame.groupby("layer")["score"].rank(ascending=False, method="first").astype(int) - 1
    frame["method"] = method
    return frame


def attribution_patching(model: LoadedModel, pairs: PromptPairs, layers: Sequence[int] | None = None,
                         batch_size: int = 256, intervention: Intervention | None = None) -> pd.DataFrame:
    """Attribution-patching estimate of every neuron's IE (under ``intervention``); one row per (layer, neuron)."""
    layers = list(range(model.n_layers)) if layers is None else sorted(layers)
    corrupt = run(model, pairs.corrupt, layers=layers, intervention=intervention).neurons
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for lo in range(0, len(pairs.clean), batch_size):
        hi = lo + batch_size
        acts, grads = neuron_gradients(model, pairs.clean[lo:hi], layers, pairs.clean_answer[lo:hi],
                                       pairs.corrupt_answer[lo:hi], intervention)
        for layer in layers:
            parts[layer].append(0.5 * (corrupt[layer][lo:hi] - acts[layer]) * grads[layer])
    return _summarise({layer: torch.cat(p) for layer, p in parts.items()}, "attribution")


def indirect_effect(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """science.md's IE from the probabilities of (r, r') before (``[B, 2]``) and after (``[..., B, 2]``) a patch."""
    return 0.5 * ((after[..., 1] - before[:, 1]) / before[:, 1] + (before[:, 0] - after[..., 0]) / after[..., 0])


def activation_patching(model: LoadedModel, pairs: PromptPairs, layers: Sequence[int] | None = None,
                        neurons_per_batch: int = 64, progress: Progress | None = None,
                        intervention: Intervention | None = None) -> pd.DataFrame:
    """Exact IE of patching each neuron alone (clean run, that neuron's last-position value from the corrupt run).

    Costs one forward pass per neuron and prompt, batched as ``neurons_per_batch`` copies of the prompts: meant
    for small models, to check attribution patching against.
    """
    layers = list(range(model.n_layers)) if layers is None else sorted(layers)
    n = len(pairs.clean)
    tokens = torch.stack([pairs.clean_answer, pairs.corrupt_answer], dim=1)  # [n, 2]: r, r'
    corrupt = run(model, pairs.corrupt, layers=layers, intervention=intervention).neurons
    before = run(model, pairs.clean, token_ids=tokens, intervention=intervention).token_probs
    scores: dict[int, torch.Tensor] = {}
    total, done = len(layers) * model.d_mlp, 0
    for layer in layers:
        effects = torch.empty(n, model.d_mlp)
        for lo in range(0, model.d_mlp, neurons_per_batch):
            chunk = torch.arange(lo, min(model.d_mlp, lo + neurons_per_batch))
            rows = torch.arange(len(chunk) * n)
            neurons = chunk.repeat_interleave(n)
            values = corrupt[layer][rows % n, neurons].to(model.hf.dtype)
            after = run(model, pairs.clean * len(chunk), token_ids=tokens.repeat(len(chunk), 1),
                        row_patch={layer: (rows, neurons, values)}, intervention=intervention,
                        batch_size=len(rows)).token_probs.reshape(len(chunk), n, 2)
            effects[:, chunk] = torch.as_tensor(indirect_effect(before, after)).T.float()
            done += len(chunk)
            report(progress, done, total)
        scores[layer] = effects
    return _summarise(scores, "activation")


def ensure_importance(model: LoadedModel, store: Store, sweep_id: int, grid: OperandGrid, n_prompts: int = 50,
                      seed: int = 0, intervention: Intervention | None = None) -> pd.DataFrame:
    """Attribution-patching importance of every neuron on a sweep's grid, computed once per (sweep, prompts, seed)
    and stored; the sweep's key already names the model, grid and intervention."""
    stored = store.importance(sweep_id, "attribution", n_prompts, seed)
    if len(stored) == model.n_layers * model.d_mlp:
        return stored
    pairs = prompt_pairs(model, grid, n_prompts, seed, stored_correctness(store, sweep_id, len(grid)), intervention)
    store.write_importance(sweep_id, n_prompts, seed, attribution_patching(model, pairs, intervention=intervention))
    return store.importance(sweep_id, "attribution", n_prompts, seed)


def first_heuristics_layer(model: LoadedModel, pairs: PromptPairs, fraction: float = 0.05,
                           intervention: Intervention | None = None) -> tuple[int, pd.DataFrame]:
    """The first layer whose MLP output promotes the answer at the last position, with the per-layer evidence.

    Evidence per layer, over the clean (correct) prompts: the MLP output's direct logit on the answer minus its
    mean logit over all number tokens (through the final norm's scale), and how often the answer is that layer's
    top-10 promoted number. The first heuristics layer is the first whose mean promotion reaches ``fraction`` of
    the largest layer's.
    """
    capture = run(model, pairs.clean, layers=None, intervention=intervention)
    answers = pairs.clean_value
    rows = []
    for layer in range(model.n_layers):
        logits = capture.neurons[layer] @ model.number_logit_lens(layer)  # [prompts, numbers]
        promotion = logits[torch.arange(len(answers)), answers] - logits.mean(-1)
        top10 = (logits.topk(10, dim=-1).indices == answers[:, None]).any(-1).float()
        rows.append({"layer": layer, "promotion": float(promotion.mean()), "answer_in_top10": float(top10.mean())})
    evidence = pd.DataFrame(rows)
    best = evidence["promotion"].max()
    above = evidence.index[evidence["promotion"] >= fraction * best] if best > 0 else evidence.index[-1:]
    return int(evidence.loc[above[0], "layer"]), evidence
