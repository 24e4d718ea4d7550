"""Running prompts through a model with nnsight: captured neurons, per-prompt answers, interventions applied.

All ``model.trace()`` code lives here (nnsight reads a trace's source once per file, so it must not sit in a
hot-reloaded page). A chunk of prompts is one trace, never a trace per prompt. Every tensor of a chunk stays on the
model's device: the last-position logits are reduced there (top-1, its probability, the probabilities of asked-for
tokens) and only those numbers and the captured neurons cross to the host, through reused buffers. This module is
also the one place that applies an :class:`~neurolab.capture.interventions.Intervention`: weight edits around the
whole computation (under the model lock), neuron ablations and patches inside each trace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import nnsight
import numpy as np
import torch
from transformers import DynamicCache

from ..errors import InterventionError
from ..models.adapters import get_module
from ..models.devices import HostStage, chunk_size
from ..models.loading import LoadedModel
from ..tasks.grid import OperandGrid, PromptTemplate
from .interventions import CLEAN, ActivationPatch, Intervention, NeuronAblation, WeightEdit
from .prefix import SharedPrefix, split_shared_prefix
from .weights import edited_weights

#: layer -> (rows, neurons, values): set ``hidden[rows[i], -1, neurons[i]] = values[i]`` (per-prompt patching, as
#: exact activation patching needs; rows index the whole prompt list, which must then fit one chunk)
RowPatch = Mapping[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
#: layer -> bool [n_prompts, d_mlp]: zero ``hidden[i, :, mask[i]]`` at every position (per-prompt ablation, as prompt
#: knockout needs; rows index the whole prompt list and are sliced per chunk)
RowMask = Mapping[int, torch.Tensor]
#: layer -> neuron indices to capture (None: every neuron of the layer)
Selection = Mapping[int, Sequence[int] | None]
MAX_BATCH = 4096


@dataclass
class LayerOp:
    """One activation edit of one layer, ready for the trace: ``values`` is [k] (every position, or the last only
    when ``last_only``) or [P, k] (per position from the end of the prompt)."""

    neurons: torch.Tensor
    values: torch.Tensor
    last_only: bool = False


@dataclass
class Capture:
    """Per-prompt results of one run, on the host: the answer (top-1 token and its probability), the probabilities of
    the asked-for tokens, optionally the full last-position logits, and the captured neurons."""

    top1: np.ndarray  # [n] int64 token ids
    top1_prob: np.ndarray  # [n] float32
    token_probs: np.ndarray | None = None  # [n, t] float32, for ``token_ids`` [n, t]
    logits: torch.Tensor | None = None  # [n, vocab] float32, only when asked for
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [n, k] float32 (k = selected)


def _edit(hidden, ops: list[LayerOp]) -> None:
    """Apply a layer's activation edits to its neuron tensor ``[batch, seq, d_mlp]`` (inside a trace)."""
    for op in ops:
        if op.last_only:
            hidden[:, -1, op.neurons] = op.values
        elif op.values.dim() == 1:
            hidden[:, :, op.neurons] = op.values
        else:  # per position from the end; earlier positions of a longer prompt take the earliest mean
            seq, known = hidden.shape[1], op.values.shape[0]
            if seq <= known:
                hidden[:, :, op.neurons] = op.values[known - seq:]
            else:
                hidden[:, seq - known:, op.neurons] = op.values
                hidden[:, : seq - known, op.neurons] = op.values[0]


def _last_logits(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the last position's logits are computed (the full [batch, seq, vocab] is never made).

    Given as a tensor of positions rather than the int 1: nnsight then hands the encoding to the model whole,
    instead of splitting it into rows and padding them again in Python (measured on the embedded model: that
    per-row loop made a 10,000-prompt trace cost 1.3x a plain forward pass).
    """
    last = inputs["input_ids"].shape[1] - 1
    return {"logits_to_keep": torch.tensor([last], device=inputs["input_ids"].device)}


def _trace(model: LoadedModel, inputs: dict[str, torch.Tensor], capture: Mapping[int, torch.Tensor | None],
           ops: Mapping[int, list[LayerOp]], row_patch: RowPatch | None, remote: bool | str,
           all_positions: bool = False, row_mask: RowMask | None = None):
    """One forward pass: edit, mask, patch, then save the captured neurons (after the edits) and last-position
    logits. ``row_mask`` is this chunk's (layer -> bool [batch, d_mlp], on the model's device)."""
    lm = model.lm  # the trace body names only nnsight objects and tensors, so a remote run can serialise it
    row_patch = row_patch or {}
    row_mask = row_mask or {}
    touched = sorted(set(capture) | set(ops) | set(row_patch) | set(row_mask))
    envoys = {layer: get_module(lm, model.adapter.mlp_out_path(layer)) for layer in touched}
    options = {"remote": remote} if remote else {}  # True: NDIF (key from the environment); "local": dry run
    with torch.no_grad(), lm.trace(**inputs, **_last_logits(inputs), **options):
        saved = []
        for layer in touched:  # modules must be visited in execution order
            hidden = envoys[layer].input
            if layer in ops:
                _edit(hidden, ops[layer])
            if layer in row_mask:
                hidden.masked_fill_(row_mask[layer][:, None, :], 0)
            if layer in row_patch:
                rows, neurons, values = row_patch[layer]
                hidden[rows, -1, neurons] = values
            if layer in capture:
                part = hidden if all_positions else hidden[:, -1]
                columns = capture[layer]
                saved.append(part if columns is None else part[..., columns])
        captured = nnsight.save(saved)
        logits = nnsight.save(lm.output.logits[:, -1])
    return logits, dict(zip([layer for layer in touched if layer in capture], captured))


def _prefix_cache(model: LoadedModel, plan: SharedPrefix, ops: Mapping[int, list[LayerOp]]) -> DynamicCache:
    """The shared prefixes' keys and values, with the activation edits that hold at every position applied."""
    lm = model.lm
    edits = {layer: [op for op in layer_ops if not op.last_only] for layer, layer_ops in ops.items()}
    edits = {layer: layer_ops for layer, layer_ops in edits.items() if layer_ops}
    envoys = {layer: get_module(lm, model.adapter.mlp_out_path(layer)) for layer in sorted(edits)}
    prefixes = plan.prefixes.to(model.device)
    inputs = {"input_ids": prefixes, "attention_mask": torch.ones_like(prefixes),
              "position_ids": torch.arange(plan.prefix_length, device=model.device).expand_as(prefixes)}
    with torch.no_grad(), lm.trace(**inputs, use_cache=True, **_last_logits(inputs)):
        for layer in sorted(edits):  # modules must be visited in execution order
            _edit(envoys[layer].input, edits[layer])
        cache = nnsight.save(lm.output.past_key_values)
    return cache


def _check_layers(model: LoadedModel, layers) -> None:
    for layer in layers:
        if not 0 <= layer < model.n_layers:
            raise InterventionError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")


def _check_neurons(model: LoadedModel, neurons: Sequence[tuple[int, int]]) -> None:
    _check_layers(model, {layer for layer, _ in neurons})
    bad = [f"L{layer}N{n}" for layer, n in neurons if not 0 <= n < model.d_mlp]
    if bad:
        raise InterventionError(f"{', '.join(bad[:5])}: the model has neurons 0..{model.d_mlp - 1} per layer")


def _by_layer(neurons: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for layer, n in neurons:
        grouped.setdefault(layer, []).append(n)
    return grouped


_MEANS: dict[tuple, dict[int, torch.Tensor]] = {}


def _grid_means(model: LoadedModel, step: NeuronAblation, edits_key: str) -> dict[int, torch.Tensor]:
    """Per layer ``[P, k]``: each ablated neuron's mean over the grid's prompts, per position from the end
    (padding excluded); computed once per model, preceding weight edits and step."""
    key = (model.fingerprint, edits_key, json.dumps(step.spec(), sort_keys=True))
    if key not in _MEANS:
        ref = step.grid
        template = PromptTemplate(ref.template, ref.fewshot, ref.seed)
        prompts = OperandGrid(ref.op, ref.max_op, model.max_single_token, template).prompts
        layers = _by_layer(step.neurons)
        columns = {layer: torch.as_tensor(ns, device=model.device) for layer, ns in layers.items()}
        sums: dict[int, torch.Tensor] = {}
        counts = None
        for lo in range(0, len(prompts), MAX_BATCH):
            inputs = _inputs(model, prompts[lo:lo + MAX_BATCH])
            _, captured = _trace(model, inputs, columns, {}, None, False, all_positions=True)
            mask = inputs["attention_mask"].float()  # [B, S], left padding: aligned from the end
            width = mask.shape[1]
            for layer, acts in captured.items():
                total = (acts.float() * mask[..., None]).sum(0)  # [S, k]
                sums[layer] = _align_add(sums.get(layer), total, width)
            counts = _align_add(counts, mask.sum(0)[:, None], width)
        _MEANS[key] = {layer: (sums[layer] / counts.clamp(min=1)).to(model.device) for layer in layers}
    return _MEANS[key]


def _align_add(acc: torch.Tensor | None, part: torch.Tensor, width: int) -> torch.Tensor:
    """Add ``part`` [S, ...] to ``acc`` [S', ...] with both aligned at their last row (positions from the end)."""
    if acc is None:
        return part
    if acc.shape[0] < width:
        acc, part = part, acc
    acc = acc.clone()
    acc[acc.shape[0] - part.shape[0]:] += part
    return acc


def _edits_key(edits: Sequence[WeightEdit]) -> str:
    return ",".join(f"{e.parameter}:{e.digest}:{e.factor}" for e in edits)


def _resolve_ops(model: LoadedModel, intervention: Intervention,
                 edits: Sequence[WeightEdit]) -> dict[int, list[LayerOp]]:
    """Turn the activation steps into per-layer edits on the model's device (means and patch values computed with
    the weight edits already applied), in step order."""
    ops: dict[int, list[LayerOp]] = {}
    for step in intervention.steps:
        if isinstance(step, WeightEdit):
            continue
        _check_neurons(model, step.neurons)
        if isinstance(step, ActivationPatch):
            columns = {layer: torch.as_tensor(ns, device=model.device) for layer, ns in _by_layer(step.neurons).items()}
            _, captured = _trace(model, _inputs(model, [step.source]), columns, {}, None, False)
            values = {layer: acts[0].to(model.hf.dtype) for layer, acts in captured.items()}
        elif step.mode == "mean":
            values = {layer: v.to(model.hf.dtype) for layer, v in _grid_means(model, step, _edits_key(edits)).items()}
        else:
            fill = 0.0 if step.mode == "zero" else step.value
            values = {layer: torch.full((len(ns),), fill, dtype=model.hf.dtype, device=model.device)
                      for layer, ns in _by_layer(step.neurons).items()}
        for layer, ns in _by_layer(step.neurons).items():
            neurons = torch.as_tensor(ns, dtype=torch.long, device=model.device)
            ops.setdefault(layer, []).append(LayerOp(neurons, values[layer], isinstance(step, ActivationPatch)))
    return ops


@contextmanager
def intervened(model: LoadedModel, intervention: Intervention | None):
    """Under the model lock: the weight edits applied (undone on exit, bit-exactly) and the activation edits ready
    for :func:`_trace`. Everything that runs the model goes through here."""
    intervention = intervention or CLEAN
    edits = [step for step in intervention.steps if isinstance(step, WeightEdit)]
    with model.lock, edited_weights(model, edits):
        yield _resolve_ops(model, intervention, edits)


def _inputs(model: LoadedModel, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    return {k: v.to(model.device) for k, v in model.encode(list(prompts)).items()}


def default_batch_size(model: LoadedModel, prompts: Sequence[str], captured_per_prompt: int,
                       logits: bool = False) -> int:
    """Prompts per trace from the free memory of the model's device: activations of every layer (the forward keeps
    few alive at once, so this over-counts), the captured neurons and the last-position logits."""
    if not prompts:
        return 1
    config = model.hf.config.get_text_config()
    seq = len(model.encode([prompts[0]])["input_ids"][0]) + 2
    width = config.hidden_size * 16 + model.d_mlp * 3
    element = torch.finfo(model.hf.dtype).bits // 8
    per_prompt = seq * width * element + captured_per_prompt * seq * 4 + model.hf.config.vocab_size * 8 * (1 + logits)
    return chunk_size(model.device, per_prompt, cap=MAX_BATCH)


ChunkCallback = Callable[[int, int, Capture], None]


def stream(model: LoadedModel, prompts: Sequence[str], on_chunk: ChunkCallback, *, layers: Selection | None = None,
           token_ids: torch.Tensor | None = None, logits: bool = False, intervention: Intervention | None = None,
           batch_size: int | None = None, remote: bool | str = False, row_patch: RowPatch | None = None,
           half: bool = False, share_prefix: bool = True, row_mask: RowMask | None = None) -> None:
    """Run ``prompts`` chunk by chunk, calling ``on_chunk(lo, hi, capture)`` with each chunk's results.

    Prompts that share their beginning (a grid) run as one pass over the distinct prefixes and one over the
    suffixes, continuing the prefixes' KV cache (:mod:`.prefix`); ``share_prefix=False``, a per-prompt patch or
    mask, a remote run or a per-position mean ablation run the plain pass. ``row_mask`` (layer -> bool
    [len(prompts), d_mlp]) zeroes, in each prompt's row, its own neurons at every position (after the
    intervention's edits): one pass ablates a different set of neurons per prompt.
    ``layers`` maps a layer to the neurons to capture (None: all of them). ``token_ids`` ([n, t]) asks for those
    tokens' probabilities per prompt. ``half`` moves captured neurons as float16 (what the store keeps).
    The arrays handed to ``on_chunk`` live in reused buffers: copy what must outlive the call.
    """
    layers = dict(layers or {})
    _check_layers(model, [*layers, *(row_patch or {}), *(row_mask or {})])
    for layer, mask in (row_mask or {}).items():
        if tuple(mask.shape) != (len(prompts), model.d_mlp) or mask.dtype != torch.bool:
            raise InterventionError(f"row_mask of layer {layer}: need bool [{len(prompts)}, {model.d_mlp}], "
                                    f"got {mask.dtype} {list(mask.shape)}")
    for layer, columns in layers.items():
        if columns is not None:
            _check_neurons(model, [(layer, n) for n in columns])
    captured_width = sum(model.d_mlp if c is None else len(c) for c in layers.values())
    size = batch_size or default_batch_size(model, prompts, captured_width, logits)
    if row_patch and len(prompts) > size:
        raise InterventionError("patching per prompt needs every prompt in one batch: raise batch_size")
    stage = HostStage()
    with intervened(model, intervention) as ops:
        columns = {layer: None if c is None else torch.as_tensor(list(c), dtype=torch.long, device=model.device)
                   for layer, c in layers.items()}
        per_position = any(op.values.dim() > 1 for layer_ops in ops.values() for op in layer_ops)
        plan = None if (row_patch or row_mask or remote or per_position or not share_prefix) else split_shared_prefix(
            model.tokenizer, prompts)
        if plan is not None and len(plan.prefixes) > size:  # the prefixes must fit one batch themselves
            plan = None
        cache = _prefix_cache(model, plan, ops) if plan is not None else None
        for lo in range(0, len(prompts), size):
            hi = min(len(prompts), lo + size)
            inputs = (plan.suffix_inputs(lo, hi, cache, model.device) if plan is not None
                      else _inputs(model, prompts[lo:hi]))
            masks = {layer: mask[lo:hi].to(model.device) for layer, mask in (row_mask or {}).items()}
            out, captured = _trace(model, inputs, columns, ops, row_patch, remote, row_mask=masks)
            probs = out.float().softmax(-1)
            top_prob, top = probs.max(-1)
            chunk = Capture(stage.copy("top1", top), stage.copy("top1_prob", top_prob))
            if token_ids is not None:
                chunk.token_probs = stage.copy("tokens", probs.gather(1, token_ids[lo:hi].to(probs.device)))
            if logits:
                chunk.logits = out.float().cpu()
            cast = torch.float16 if half else torch.float32
            chunk.neurons = {layer: torch.from_numpy(stage.copy(f"L{layer}", acts.to(cast)))
                             for layer, acts in captured.items()}
            stage.wait()
            on_chunk(lo, hi, chunk)


def run(model: LoadedModel, prompts: Sequence[str], layers: Selection | Sequence[int] | None = (), *,
        token_ids: torch.Tensor | None = None, logits: bool = False, intervention: Intervention | None = None,
        batch_size: int | None = None, remote: bool | str = False, row_patch: RowPatch | None = None,
        share_prefix: bool = True, row_mask: RowMask | None = None) -> Capture:
    """Run ``prompts`` and gather every chunk's results (see :func:`stream`). ``layers``: a selection mapping, a list
    of layers (all their neurons), or None for every neuron of every layer."""
    if layers is None:
        layers = dict.fromkeys(range(model.n_layers))
    elif not isinstance(layers, Mapping):
        layers = dict.fromkeys(sorted(set(layers)))
    parts: list[Capture] = []

    def keep(lo: int, hi: int, chunk: Capture) -> None:
        parts.append(Capture(
            chunk.top1.copy(), chunk.top1_prob.copy(),
            None if chunk.token_probs is None else chunk.token_probs.copy(), chunk.logits,
            {layer: acts.clone() for layer, acts in chunk.neurons.items()}))

    stream(model, prompts, keep, layers=layers, token_ids=token_ids, logits=logits, intervention=intervention,
           batch_size=batch_size, remote=remote, row_patch=row_patch, share_prefix=share_prefix, row_mask=row_mask)
    if not parts:
        return Capture(np.empty(0, np.int64), np.empty(0, np.float32))
    return Capture(
        np.concatenate([p.top1 for p in parts]), np.concatenate([p.top1_prob for p in parts]),
        None if token_ids is None else np.concatenate([p.token_probs for p in parts]),
        torch.cat([p.logits for p in parts]) if logits else None,
        {layer: torch.cat([p.neurons[layer] for p in parts]) for layer in parts[0].neurons},
    )


def neuron_gradients(
    model: LoadedModel, prompts: Sequence[str], layers: Sequence[int], good: torch.Tensor, bad: torch.Tensor,
    intervention: Intervention | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Last-position neurons and the gradient of ``sum_b log p(bad_b) - log p(good_b)`` with respect to them.

    One forward and one backward pass (attribution patching's linearisation), under ``intervention``; returns
    ``(activations, gradients)``, each layer -> ``[len(prompts), d_mlp]`` float32 on the host.
    """
    lm = model.lm
    layers = sorted(layers)
    _check_layers(model, layers)
    with intervened(model, intervention) as ops:
        touched = sorted(set(layers) | set(ops))
        envoys = {layer: get_module(lm, model.adapter.mlp_out_path(layer)) for layer in touched}
        inputs = _inputs(model, prompts)
        rows = torch.arange(len(prompts), device=model.device)
        good, bad = good.to(model.device), bad.to(model.device)
        with torch.enable_grad(), lm.trace(**inputs, **_last_logits(inputs)):
            hiddens = []
            for layer in touched:
                hidden = envoys[layer].input
                if layer in ops:
                    _edit(hidden, ops[layer])
                if layer in layers:
                    hiddens.append(hidden)
            acts = nnsight.save([hidden[:, -1] for hidden in hiddens])
            logp = lm.output.logits[:, -1].float().log_softmax(-1)
            metric = (logp[rows, bad] - logp[rows, good]).sum()
            with metric.backward():
                grads = nnsight.save([hidden.grad[:, -1] for hidden in hiddens[::-1]])
    grads = grads[::-1]
    return (
        {layer: a.detach().float().cpu() for layer, a in zip(layers, acts)},
        {layer: g.detach().float().cpu() for layer, g in zip(layers, grads)},
    )
