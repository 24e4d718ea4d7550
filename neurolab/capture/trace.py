"""Running prompts through a model with nnsight: captured neurons, per-prompt answers, interventions applied.

All ``model.trace()`` code lives here, in one function, :func:`run_pass` (nnsight reads a trace's source once per
file, so it must not sit in a hot-reloaded page): every caller (grid passes, prefix caches, grid means, gradients,
component patching) describes what one trace does as a :class:`Pass`. A chunk of prompts is one trace, never a trace
per prompt. Every tensor of a chunk stays on the model's device: the last-position logits are reduced there (top-1,
its probability, the probabilities of asked-for tokens) and only those numbers and the captured neurons cross to the
host, through reused buffers. This module is also the one place that applies an
:class:`~neurolab.capture.interventions.Intervention`: weight edits around the whole computation (under the model
lock), neuron edits inside each trace.

**An edit costs only what it changes.** An intervention whose first changed layer is L leaves the residual stream
entering layer L as the clean model computed it. A clean pass over a grid keeps those residuals (and the final
residual and the last layer's neurons at the last position) in :mod:`.kept`, within a byte budget; a pass under an
edit then skips layers 0..L-1 (nnsight's ``skip``), feeding layer L the kept residual. An edit of the last layer's
neurons needs no layer at all: its logits are the kept final residual minus the edited neurons' change times their
value vectors, through the final norm and the unembedding (:func:`_last_layer_logits`). Several interventions over
the same prompts run as one batch, their rows side by side (:func:`run_side_by_side`). Each shortcut equals the full
pass (tests: logits within 1e-4 in float32 on every family).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import nnsight
import numpy as np
import torch
from transformers import DynamicCache

from ..errors import InterventionError
from ..keys import DATA_DIGEST_SIZE, digest
from ..models.adapters import get_module, value_vectors
from ..models.devices import HostStage, chunk_size
from ..models.loading import LoadedModel
from ..tasks.grid import OperandGrid, PromptTemplate
from . import kept
from .interventions import CLEAN, Intervention, LayerOp, NeuronAblation, by_layer, check_layers, check_neurons
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
#: a clean pass over at least this many prompts keeps its residuals for the edits that follow
KEEP_MIN_PROMPTS = 64


@dataclass
class Pass:
    """What one trace does. Layers are visited in execution order; within a layer: its input (the residual stream),
    its heads (the attention output projection's input), its neurons (the MLP down projection's input), its MLP
    output. ``resume = (L, residual)`` skips layers 0..L-1 and feeds ``residual`` to layer L: edits, captures and
    patches below L are dropped (the residual already carries their effect)."""

    inputs: dict[str, torch.Tensor]
    ops: Mapping[int, list[LayerOp]] = field(default_factory=dict)
    capture: Mapping[int, torch.Tensor | None] = field(default_factory=dict)  # layer -> neuron columns (None: all)
    #: layer -> neuron columns (None: all) of the pre-activation to capture at the last position: the up/in
    #: projection's output ("pre"), or a gated MLP's gate and up projections' ("gate", "up"), before any neuron edit
    pre: Mapping[int, torch.Tensor | None] = field(default_factory=dict)
    #: [batch, seq] weights: capture every position summed over the rows with these weights ([seq, k], a grid
    #: mean's numerator, reduced on the device) instead of the last position of each row
    row_sum: torch.Tensor | None = None
    row_mask: Mapping[int, torch.Tensor] = field(default_factory=dict)  # layer -> bool [batch, d_mlp]: zeroed
    row_patch: RowPatch = field(default_factory=dict)
    residuals: Sequence[int] = ()  # layers whose input to return; n_layers: the final norm's input, last position
    resume: tuple[int, torch.Tensor] | None = None
    head_patches: Mapping[int, tuple] = field(default_factory=dict)  # layer -> (rows, positions, columns, values)
    mlp_patches: Mapping[int, tuple] = field(default_factory=dict)  # layer -> (rows, positions, values)
    components: Sequence[int] = ()  # layers whose heads and MLP output to return
    cache: bool = False  # return the KV cache (a prefix pass)
    gradient: tuple[torch.Tensor, torch.Tensor] | None = None  # (good, bad) ids: d(log p(bad) - log p(good))/d neurons


@dataclass
class PassResult:
    """A trace's outputs, on the model's device."""

    logits: torch.Tensor  # [batch, vocab], last position
    neurons: dict[int, torch.Tensor]
    residuals: dict[int, torch.Tensor]
    components: dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer -> (heads [B, S, H*d], MLP output [B, S, d])
    gradients: dict[int, torch.Tensor]  # layer -> [batch, d_mlp] at the last position
    cache: DynamicCache | None = None
    pre: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # layer -> {"pre"|"gate"|"up": [batch, k]}


@dataclass
class Capture:
    """Per-prompt results of one run, on the host: the answer (top-1 token and its probability), the probabilities of
    the asked-for tokens, optionally the full last-position logits, and the captured neurons."""

    top1: np.ndarray  # [n] int64 token ids
    top1_prob: np.ndarray  # [n] float32
    token_probs: np.ndarray | None = None  # [n, t] float32, for ``token_ids`` [n, t]
    logits: torch.Tensor | None = None  # [n, vocab] float32, only when asked for
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [n, k] float32 (k = selected)


def _last_logits(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the last position's logits are computed (the full [batch, seq, vocab] is never made).

    Given as a tensor of positions rather than the int 1: nnsight then hands the encoding to the model whole,
    instead of splitting it into rows and padding them again in Python (measured on the embedded model: that
    per-row loop made a 10,000-prompt trace cost 1.3x a plain forward pass).
    """
    last = inputs["input_ids"].shape[1] - 1
    return {"logits_to_keep": torch.tensor([last], device=inputs["input_ids"].device)}


def run_pass(model: LoadedModel, p: Pass, remote: bool | str = False) -> PassResult:
    """The one trace of neurolab: see :class:`Pass`."""
    lm = model.lm  # the trace body names only nnsight objects and tensors, so a remote run can serialise it
    adapter, n_layers = model.adapter, model.n_layers
    start = p.resume[0] if p.resume is not None else 0

    def live(mapping):
        return {layer: value for layer, value in mapping.items() if layer >= start}

    ops, capture, row_mask, row_patch = live(p.ops), live(p.capture), live(p.row_mask), live(p.row_patch)
    head_patches, mlp_patches, pre = live(p.head_patches), live(p.mlp_patches), live(p.pre)
    neuron_layers = set(ops) | set(capture) | set(row_mask) | set(row_patch)
    component_layers = {layer for layer in p.components if layer >= start} | set(head_patches) | set(mlp_patches)
    block_layers = {layer for layer in p.residuals if start <= layer < n_layers}
    touched = sorted(neuron_layers | component_layers | block_layers | set(pre))
    pre_out = {layer: [get_module(lm, path) for path in adapter.pre_activation_paths(layer).values()]
               for layer in pre}
    blocks = get_module(lm, adapter.layers)
    down = {layer: get_module(lm, adapter.mlp_out_path(layer)) for layer in neuron_layers}
    heads_in = {layer: get_module(lm, adapter.attn_out_path(layer)) for layer in component_layers}
    mlp_out = {layer: get_module(lm, adapter.mlp_path(layer)) for layer in component_layers}
    final_norm = get_module(lm, adapter.final_norm)
    grad = p.gradient is not None
    options = {"remote": remote} if remote else {}  # True: NDIF (key from the environment); "local": dry run
    if p.cache:
        options["use_cache"] = True
    cache, grads = None, []  # only saved values come back from the trace body
    with (torch.enable_grad() if grad else torch.no_grad()), lm.trace(**p.inputs, **_last_logits(p.inputs),
                                                                      **options):
        if p.resume is not None:
            for layer in range(start):  # in execution order, before anything of layer ``start``
                blocks[layer].skip(adapter.block_output(p.resume[1]))
        neurons, residuals, components, hiddens, pres = [], [], [], [], []
        for layer in touched:  # modules must be visited in execution order
            if layer in block_layers:
                residuals.append(blocks[layer].input)
            if layer in component_layers:
                heads = heads_in[layer].input
                if layer in head_patches:
                    rows, positions, columns, values = head_patches[layer]
                    heads[rows, positions, columns] = values
                if layer in p.components:
                    components.append(heads)
            for module in pre_out.get(layer, ()):
                out = module.output
                pres.append((out if pre[layer] is None else out[..., pre[layer]])[:, -1])
            if layer in neuron_layers:
                hidden = down[layer].input
                for op in ops.get(layer, ()):
                    op.apply(hidden)
                if layer in row_mask:
                    hidden.masked_fill_(row_mask[layer][:, None, :], 0)
                if layer in row_patch:
                    rows, columns, values = row_patch[layer]
                    hidden[rows, -1, columns] = values
                if layer in capture:
                    if grad:
                        hiddens.append(hidden)
                    columns = capture[layer]
                    part = hidden if columns is None else hidden[..., columns]
                    if p.row_sum is None:
                        neurons.append(part[:, -1])
                    else:
                        neurons.append(torch.einsum("bs,bsk->sk", p.row_sum.to(part.dtype), part).float())
            if layer in component_layers:
                out = mlp_out[layer].output
                if layer in mlp_patches:
                    rows, positions, values = mlp_patches[layer]
                    out[rows, positions] = values
                if layer in p.components:
                    components.append(out)
        if n_layers in p.residuals:
            residuals.append(final_norm.input[:, -1])
        saved = nnsight.save([neurons, residuals, components, pres])
        logits = nnsight.save(lm.output.logits[:, -1])
        if p.cache:
            cache = nnsight.save(lm.output.past_key_values)
        if grad:
            good, bad = p.gradient
            rows = torch.arange(len(good), device=good.device)
            logp = lm.output.logits[:, -1].float().log_softmax(-1)
            metric = (logp[rows, bad] - logp[rows, good]).sum()
            with metric.backward():
                grads = nnsight.save([hidden.grad[:, -1] for hidden in hiddens[::-1]])
    neurons, residuals, components, pres = saved
    pre_values, found = {}, iter(pres)
    for layer in (layer for layer in touched if layer in pre):
        pre_values[layer] = {name: next(found) for name in adapter.pre_activation_paths(layer)}
    captured = [layer for layer in touched if layer in capture]
    kept_layers = [layer for layer in touched if layer in block_layers]
    kept_layers += [n_layers] if n_layers in p.residuals else []
    component_list = [layer for layer in touched if layer in p.components]
    return PassResult(
        logits, dict(zip(captured, neurons)), dict(zip(kept_layers, residuals)),
        {layer: (components[2 * i], components[2 * i + 1]) for i, layer in enumerate(component_list)},
        dict(zip(captured, grads[::-1])) if grad else {}, cache, pre_values)


def _inputs(model: LoadedModel, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    return {k: v.to(model.device) for k, v in model.encode(list(prompts)).items()}


def _prompts_key(prompts: Sequence[str]) -> str:
    return digest("\n".join(prompts), size=DATA_DIGEST_SIZE)


class _Measure:
    """How steps measure the model while they resolve (:class:`~.interventions.Measure`), under the weight edits
    already applied; grid means are kept (bounded) per model, edits and step."""

    def __init__(self, model: LoadedModel, edits_key: str) -> None:
        self.model, self.edits_key = model, edits_key

    def last_values(self, prompt: str, neurons: Sequence[tuple[int, int]]) -> dict[int, torch.Tensor]:
        columns = {layer: torch.as_tensor(ns, device=self.model.device) for layer, ns in by_layer(neurons).items()}
        result = run_pass(self.model, Pass(_inputs(self.model, [prompt]), capture=columns))
        return {layer: acts[0] for layer, acts in result.neurons.items()}

    def grid_means(self, step: NeuronAblation) -> dict[int, torch.Tensor]:
        """Per layer ``[P, k]``: each neuron's mean over the grid's prompts, per position from the end (padding
        excluded). Measured for every neuron of the step's layers at once, in one pass, and kept per layer: the
        random control of a mean ablation (the same layers) and the next neurons of those layers cost nothing."""
        model, cache = self.model, kept.cache_for(self.model.device)
        ref = step.grid
        base = ("means", model.fingerprint, self.edits_key, ref)
        wanted = by_layer(step.neurons)
        layer_means = {layer: cache.get((*base, layer)) for layer in wanted}
        missing = [layer for layer, found in layer_means.items() if found is None]
        if missing:
            template = PromptTemplate(ref.template, ref.fewshot, ref.seed)
            prompts = OperandGrid(ref.op, ref.max_op, model.max_single_token, template).prompts
            sums: dict[int, torch.Tensor] = {}
            counts = None
            for lo in range(0, len(prompts), MAX_BATCH):
                inputs = _inputs(model, prompts[lo:lo + MAX_BATCH])
                mask = inputs["attention_mask"].float()  # [B, S], left padding: aligned from the end
                width = mask.shape[1]
                captured = run_pass(model, Pass(inputs, capture=dict.fromkeys(missing), row_sum=mask)).neurons
                for layer, total in captured.items():  # [S, d_mlp]
                    sums[layer] = _align_add(sums.get(layer), total, width)
                counts = _align_add(counts, mask.sum(0)[:, None], width)
            for layer in missing:
                layer_means[layer] = sums[layer] / counts.clamp(min=1)
                cache.put((*base, layer), layer_means[layer])
        return {layer: layer_means[layer][:, torch.as_tensor(ns, device=model.device)]
                for layer, ns in wanted.items()}


def _align_add(acc: torch.Tensor | None, part: torch.Tensor, width: int) -> torch.Tensor:
    """Add ``part`` [S, ...] to ``acc`` [S', ...] with both aligned at their last row (positions from the end)."""
    if acc is None:
        return part
    if acc.shape[0] < width:
        acc, part = part, acc
    acc = acc.clone()
    acc[acc.shape[0] - part.shape[0]:] += part
    return acc


def _resolve(model: LoadedModel, intervention: Intervention, edits_key: str) -> dict[int, list[LayerOp]]:
    """The activation steps as per-layer edits on the model's device, in step order (means and patch values measured
    with the weight edits already applied)."""
    measure = _Measure(model, edits_key)
    ops: dict[int, list[LayerOp]] = {}
    for step in intervention.steps:
        for layer, layer_ops in step.layer_ops(model, measure).items():
            ops.setdefault(layer, []).extend(layer_ops)
    return ops


def _edits_key(intervention: Intervention) -> str:
    return ",".join(f"{e.parameter}:{e.digest}:{e.factor}" for e in intervention.weight_edits)


@contextmanager
def intervened_many(model: LoadedModel, interventions: Sequence[Intervention]) -> Iterator[list[dict]]:
    """Under the model lock: the (shared) weight edits applied, undone on exit bit-exactly, and each intervention's
    activation edits resolved. Interventions run side by side must share their weight edits (weights are one per
    model, not one per row)."""
    interventions = list(interventions) or [CLEAN]
    edits_key = _edits_key(interventions[0])
    if any(_edits_key(iv) != edits_key for iv in interventions):
        raise InterventionError("interventions run side by side must edit the same weights")
    with model.lock, edited_weights(model, interventions[0].weight_edits):
        yield [_resolve(model, iv, edits_key) for iv in interventions]


@contextmanager
def intervened(model: LoadedModel, intervention: Intervention | None):
    """Under the model lock: the weight edits applied (undone on exit, bit-exactly) and the activation edits ready
    for a :class:`Pass`. Everything that runs the model goes through here."""
    with intervened_many(model, [intervention or CLEAN]) as (ops,):
        yield ops


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


def _side_by_side(variant_ops: Sequence[Mapping[int, list[LayerOp]]], rows: int) -> dict[int, list[LayerOp]]:
    """Each variant's edits on its own block of ``rows`` rows (variant v: rows v*rows .. (v+1)*rows - 1)."""
    if len(variant_ops) == 1:
        return dict(variant_ops[0])
    ops: dict[int, list[LayerOp]] = {}
    for v, layer_ops in enumerate(variant_ops):
        for layer, items in layer_ops.items():
            ops.setdefault(layer, []).extend(op.on_rows(slice(v * rows, (v + 1) * rows)) for op in items)
    return ops


def _on_prompts(ops: Mapping[int, list[LayerOp]], prompts: Sequence[str]) -> dict[int, list[LayerOp]]:
    """Per-prompt edits (a :class:`~.interventions.GridPatch`) resolved to the rows of ``prompts``."""
    return {layer: [op.for_prompts(prompts) if op.by_prompt is not None else op for op in items]
            for layer, items in ops.items()}


def _prefix_ops(ops: Mapping[int, list[LayerOp]], plan: SharedPrefix) -> dict[int, list[LayerOp]]:
    """The edits that hold at the prefix positions: every-position edits as they are, per-position ones cut to the
    prefix's positions of the whole prompt (last-position edits do not reach the prefix)."""
    p, s = plan.prefix_length, plan.suffix_length
    found: dict[int, list[LayerOp]] = {}
    for layer, items in ops.items():
        for op in items:
            if op.last_only:
                continue
            if op.per_position:
                values = op.values
                if values.shape[0] < p + s:  # earlier positions take the earliest value, as LayerOp.apply does
                    pad = values[:1].expand(p + s - values.shape[0], -1)
                    values = torch.cat([pad, values])
                op = LayerOp(op.neurons, values[-(p + s):][:p], False, op.rows)
            found.setdefault(layer, []).append(op)
    return found


def _prefix_cache(model: LoadedModel, plan: SharedPrefix, ops: Mapping[int, list[LayerOp]],
                  copies: int = 1) -> DynamicCache:
    """The shared prefixes' keys and values (``copies`` times, one block per variant), with the edits applied."""
    prefixes = plan.prefixes.to(model.device).repeat(copies, 1)
    inputs = {"input_ids": prefixes, "attention_mask": torch.ones_like(prefixes),
              "position_ids": torch.arange(plan.prefix_length, device=model.device).expand_as(prefixes)}
    return run_pass(model, Pass(inputs, ops=ops, cache=True)).cache


@dataclass
class _Kept:
    """Clean results of one grid kept for later edits, all rows in prompt order: residual entering each layer (at
    the suffix positions on the prefix-shared path, every position on the plain one), the final residual and the
    last layer's neurons at the last position."""

    key: tuple

    def layer(self, model: LoadedModel, layer: int) -> torch.Tensor | None:
        return kept.cache_for(model.device).get((*self.key, layer))

    def put(self, model: LoadedModel, layer: int, value) -> None:
        kept.cache_for(model.device).put((*self.key, layer), value)

    def has_last(self, model: LoadedModel) -> bool:
        """Whether the last-layer shortcut's inputs (final residual, last layer's neurons) are kept."""
        cache = kept.cache_for(model.device)
        return (*self.key, "last") in cache and (*self.key, model.n_layers) in cache


#: grids whose clean residuals were kept, most recent last: (fingerprint, path) -> {prompts key: (row of each
#: prompt, kept state, prefix plan)}; a run over some of a grid's prompts starts from that grid's rows
_GRIDS: OrderedDict[tuple, tuple[dict[str, int], _Kept, SharedPrefix | None]] = OrderedDict()
MAX_GRIDS = 8


def _register_grid(model: LoadedModel, prompts: Sequence[str], state: _Kept, plan: SharedPrefix | None) -> None:
    _GRIDS[state.key] = ({prompt: i for i, prompt in enumerate(prompts)}, state, plan)
    _GRIDS.move_to_end(state.key)
    while len(_GRIDS) > MAX_GRIDS:
        _GRIDS.popitem(last=False)


def _parent_grid(model: LoadedModel, prompts: Sequence[str], shared: bool
                 ) -> tuple[_Kept, SharedPrefix | None, torch.Tensor] | None:
    """A kept grid of this model holding every one of ``prompts`` (on the prefix-shared path only when ``shared``),
    with the prompts' rows in it."""
    for key, (index, state, plan) in reversed(_GRIDS.items()):
        if key[0] != model.fingerprint or (plan is not None and not shared):
            continue
        rows = [index.get(prompt) for prompt in prompts]
        if None not in rows:
            return state, plan, torch.as_tensor(rows, dtype=torch.long)
    return None


def _uniform_length(model: LoadedModel, prompts: Sequence[str]) -> bool:
    lengths = {len(ids) for ids in model.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]}
    return len(lengths) == 1


@torch.no_grad()
def _last_layer_logits(model: LoadedModel, final: torch.Tensor, acts: torch.Tensor,
                       ops: Mapping[int, list[LayerOp]], row_mask: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Logits at the last position when only the last layer's neurons change: the MLP output is linear in them, so
    the final residual moves by (new - old) @ W_out, then the final norm and the unembedding. ``final`` [B, d] and
    ``acts`` [B, d_mlp] are the clean model's."""
    last = model.n_layers - 1
    edits = list(ops.get(last, ()))
    weights = value_vectors(get_module(model.hf, model.adapter.mlp_out_path(last)))  # [d_mlp, d_model]
    if edits and last not in row_mask:  # only the edited neurons' columns move: work on those alone
        columns = torch.unique(torch.cat([op.neurons for op in edits]))
        edits = [LayerOp(torch.searchsorted(columns, op.neurons), op.values, op.last_only, op.rows) for op in edits]
        acts, weights = acts[:, columns], weights[columns]
    new = acts.clone().unsqueeze(1)  # [B, 1, k]: one position, the last
    for op in edits:
        op.apply(new)
    if last in row_mask:
        new.masked_fill_(row_mask[last][:, None, :], 0)
    moved = final + (new.squeeze(1) - acts) @ weights
    norm = get_module(model.hf, model.adapter.final_norm)
    head = get_module(model.hf, model.adapter.unembed)
    return head(norm(moved))


def _engine(model: LoadedModel, prompts: Sequence[str], variants: Sequence[Intervention],
            on_chunk: Callable[[int, int, list[Capture]], None], *, layers: Selection, token_ids: torch.Tensor | None,
            logits: bool, batch_size: int | None, remote: bool | str, row_patch: RowPatch | None, half: bool,
            share_prefix: bool, row_mask: RowMask | None, keep: bool) -> None:
    """Run ``prompts`` under each of ``variants`` (their rows side by side in each trace), chunk by chunk, calling
    ``on_chunk(lo, hi, [capture per variant])``. See :func:`stream` for the options and the module's docstring for
    what is kept and skipped."""
    layers = dict(layers or {})
    row_mask, row_patch = dict(row_mask or {}), dict(row_patch or {})
    check_layers(model, [*layers, *row_patch, *row_mask])
    for layer, mask in row_mask.items():
        if tuple(mask.shape) != (len(prompts), model.d_mlp) or mask.dtype != torch.bool:
            raise InterventionError(f"row_mask of layer {layer}: need bool [{len(prompts)}, {model.d_mlp}], "
                                    f"got {mask.dtype} {list(mask.shape)}")
    for layer, columns in layers.items():
        if columns is not None:
            check_neurons(model, [(layer, n) for n in columns])
    copies = len(variants)
    if copies > 1 and (row_mask or row_patch):
        raise InterventionError("per-prompt masks and patches run one intervention at a time")
    captured_width = sum(model.d_mlp if c is None else len(c) for c in layers.values())
    size = batch_size or max(1, default_batch_size(model, prompts, captured_width, logits) // copies)
    if row_patch and len(prompts) > size:
        raise InterventionError("patching per prompt needs every prompt in one batch: raise batch_size")
    stage = HostStage()
    n_layers = model.n_layers
    with intervened_many(model, variants) as variant_ops:
        columns = {layer: None if c is None else torch.as_tensor(list(c), dtype=torch.long, device=model.device)
                   for layer, c in layers.items()}
        plan = None if (row_patch or row_mask or remote or not share_prefix) else split_shared_prefix(
            model.tokenizer, prompts)
        if plan is not None and copies * len(plan.prefixes) > size:  # the prefixes must fit one batch themselves
            plan = None
        uniform = plan is not None or (not remote and len(prompts) >= KEEP_MIN_PROMPTS
                                       and _uniform_length(model, prompts))
        store = _Kept((model.fingerprint, _prompts_key(prompts), plan is not None)) if uniform and keep else None
        # the first layer anything changes, and the first one read: everything before is the clean model's
        edit_start = min([iv.first_layer(model) for iv in variants] + list(row_mask) + list(row_patch),
                         default=n_layers)
        start = min([edit_start, *layers])
        weights = any(iv.weight_edits for iv in variants)
        clean = edit_start == n_layers and not weights
        # an edit of the last layer's neurons alone, nothing captured: no layer runs at all
        last_only = edit_start == n_layers - 1 and not layers and not row_patch and not weights and not remote
        shortcut = store is not None and last_only and store.has_last(model)
        resume_from = None
        if store is not None and not shortcut and 0 < start < n_layers and store.layer(model, start) is not None:
            resume_from = start
        source = None  # the rows of a kept grid that these prompts are part of (None: their own)
        if keep and not (shortcut or resume_from or remote or row_patch) and 0 < start < n_layers:
            found = _parent_grid(model, prompts, shared=not (row_mask or not share_prefix))
            if found is not None:
                parent, parent_plan, source = found
                shortcut = last_only and parent.has_last(model)
                resume_from = start if not shortcut and parent.layer(model, start) is not None else None
                if shortcut or resume_from:
                    store = parent
                    if parent_plan is not None:
                        plan = parent_plan.subset(source)
                else:
                    source = None
        keep_layers: list[int] = []
        keep_last = False
        if store is not None and source is None and not remote and not shortcut:
            if clean and len(prompts) >= KEEP_MIN_PROMPTS:
                keep_layers = [layer for layer in range(max(1, start if resume_from else 1), n_layers + 1)
                               if store.layer(model, layer) is None]
                keep_last = not store.has_last(model)
            elif 0 < start < n_layers and resume_from is None:
                keep_layers = [start]  # under the edit, the residual entering its first layer is still clean
        kept_parts: dict = {layer: [] for layer in keep_layers}
        if keep_last:
            kept_parts["last"] = []
        cache = None
        if plan is not None and not shortcut:
            cache = _prefix_cache(model, plan, _prefix_ops(_side_by_side(variant_ops, len(plan.prefixes)), plan),
                                  copies)
        for lo in range(0, len(prompts), size):
            hi = min(len(prompts), lo + size)
            rows = hi - lo
            ops = _on_prompts(_side_by_side(variant_ops, rows), prompts[lo:hi])
            masks = {layer: mask[lo:hi].to(model.device) for layer, mask in row_mask.items()}
            rows_kept = slice(lo, hi) if source is None else source[lo:hi]
            if shortcut:
                final, acts = store.layer(model, n_layers), store.layer(model, "last")
                out = _last_layer_logits(model, final[rows_kept].repeat(copies, 1), acts[rows_kept].repeat(copies, 1),
                                         ops, masks)
                result = PassResult(out, {}, {}, {}, {})
            else:
                inputs = (plan.suffix_inputs(lo, hi, cache, model.device, copies) if plan is not None
                          else _inputs(model, prompts[lo:hi] * copies))
                resume = None
                if resume_from is not None:
                    resume = (resume_from, store.layer(model, resume_from)[rows_kept].repeat(copies, 1, 1))
                wanted = dict(columns)
                if "last" in kept_parts:
                    wanted[n_layers - 1] = None  # all of the last layer's neurons, for the shortcut
                result = run_pass(model, Pass(inputs, ops=ops, capture=wanted, row_mask=masks, row_patch=row_patch,
                                              residuals=keep_layers, resume=resume), remote)
                for layer in keep_layers:
                    kept_parts[layer].append(result.residuals[layer][:rows])
                if "last" in kept_parts:
                    kept_parts["last"].append(result.neurons[n_layers - 1][:rows].clone())
            if "last" in kept_parts and columns.get(n_layers - 1) is not None:
                result.neurons[n_layers - 1] = result.neurons[n_layers - 1][:, columns[n_layers - 1]]
            out = result.logits
            out = out.float()  # probabilities as exp(logit - logsumexp): no [batch, vocab] softmax is made
            top_logit, top = out.max(-1)
            log_norm = torch.logsumexp(out, -1)
            top_prob = (top_logit - log_norm).exp()
            chunks = []
            for v in range(copies):
                part = slice(v * rows, (v + 1) * rows)
                chunk = Capture(stage.copy(f"top1.{v}", top[part]), stage.copy(f"top1_prob.{v}", top_prob[part]))
                if token_ids is not None:
                    picked = (out[part].gather(1, token_ids[lo:hi].to(out.device)) - log_norm[part, None]).exp()
                    chunk.token_probs = stage.copy(f"tokens.{v}", picked)
                if logits:
                    chunk.logits = out[part].cpu()
                cast = torch.float16 if half else torch.float32
                chunk.neurons = {layer: torch.from_numpy(stage.copy(f"L{layer}.{v}", result.neurons[layer][part]
                                                                     .to(cast)))
                                 for layer in columns}
                chunks.append(chunk)
            stage.wait()
            on_chunk(lo, hi, chunks)
        if store is not None and kept_parts:
            for layer, parts in kept_parts.items():
                store.put(model, layer, torch.cat(parts))
            if clean:
                _register_grid(model, prompts, store, plan)


def stream(model: LoadedModel, prompts: Sequence[str], on_chunk: Callable[[int, int, Capture], None], *,
           layers: Selection | None = None, token_ids: torch.Tensor | None = None, logits: bool = False,
           intervention: Intervention | None = None, batch_size: int | None = None, remote: bool | str = False,
           row_patch: RowPatch | None = None, half: bool = False, share_prefix: bool = True,
           row_mask: RowMask | None = None, keep: bool = True) -> None:
    """Run ``prompts`` chunk by chunk, calling ``on_chunk(lo, hi, capture)`` with each chunk's results.

    Prompts that share their beginning (a grid) run as one pass over the distinct prefixes and one over the
    suffixes, continuing the prefixes' KV cache (:mod:`.prefix`); ``share_prefix=False``, a per-prompt patch or
    mask, or a remote run take the plain pass. ``row_mask`` (layer -> bool [len(prompts), d_mlp]) zeroes, in each
    prompt's row, its own neurons at every position (after the intervention's edits): one pass ablates a different
    set of neurons per prompt. ``layers`` maps a layer to the neurons to capture (None: all of them). ``token_ids``
    ([n, t]) asks for those tokens' probabilities per prompt. ``half`` moves captured neurons as float16 (what the
    store keeps). A clean pass keeps its residuals for later edits of the same prompts, and an edited one starts
    where the kept residuals let it (see the module's docstring); ``keep=False`` runs every layer and keeps nothing
    (the reference the shortcuts are tested against). The arrays handed to ``on_chunk`` live
    in reused buffers: copy what must outlive the call.
    """
    _engine(model, prompts, [intervention or CLEAN], lambda lo, hi, chunks: on_chunk(lo, hi, chunks[0]),
            layers=layers or {}, token_ids=token_ids, logits=logits, batch_size=batch_size, remote=remote,
            row_patch=row_patch, half=half, share_prefix=share_prefix, row_mask=row_mask, keep=keep)


def _gather(model: LoadedModel, prompts: Sequence[str], variants: Sequence[Intervention], *,
            layers: Selection | Sequence[int] | None = (), token_ids: torch.Tensor | None = None, logits: bool = False,
            **options) -> list[Capture]:
    if layers is None:
        layers = dict.fromkeys(range(model.n_layers))
    elif not isinstance(layers, Mapping):
        layers = dict.fromkeys(sorted(set(layers)))
    parts: list[list[Capture]] = [[] for _ in variants]

    def collect(lo: int, hi: int, chunks: list[Capture]) -> None:
        for found, chunk in zip(parts, chunks):
            found.append(Capture(
                chunk.top1.copy(), chunk.top1_prob.copy(),
                None if chunk.token_probs is None else chunk.token_probs.copy(), chunk.logits,
                {layer: acts.clone() for layer, acts in chunk.neurons.items()}))

    _engine(model, prompts, variants, collect, layers=layers, token_ids=token_ids, logits=logits,
            batch_size=options.get("batch_size"), remote=options.get("remote", False),
            row_patch=options.get("row_patch"), half=False, share_prefix=options.get("share_prefix", True),
            row_mask=options.get("row_mask"), keep=options.get("keep", True))
    return [_concatenate(found, token_ids is not None, logits) for found in parts]


def _concatenate(parts: list[Capture], tokens: bool, logits: bool) -> Capture:
    if not parts:
        return Capture(np.empty(0, np.int64), np.empty(0, np.float32))
    return Capture(
        np.concatenate([p.top1 for p in parts]), np.concatenate([p.top1_prob for p in parts]),
        np.concatenate([p.token_probs for p in parts]) if tokens else None,
        torch.cat([p.logits for p in parts]) if logits else None,
        {layer: torch.cat([p.neurons[layer] for p in parts]) for layer in parts[0].neurons},
    )


def run(model: LoadedModel, prompts: Sequence[str], layers: Selection | Sequence[int] | None = (), *,
        token_ids: torch.Tensor | None = None, logits: bool = False, intervention: Intervention | None = None,
        batch_size: int | None = None, remote: bool | str = False, row_patch: RowPatch | None = None,
        share_prefix: bool = True, row_mask: RowMask | None = None, keep: bool = True) -> Capture:
    """Run ``prompts`` and gather every chunk's results (see :func:`stream`). ``layers``: a selection mapping, a list
    of layers (all their neurons), or None for every neuron of every layer."""
    return _gather(model, prompts, [intervention or CLEAN], layers=layers, token_ids=token_ids, logits=logits,
                   batch_size=batch_size, remote=remote, row_patch=row_patch, share_prefix=share_prefix,
                   row_mask=row_mask, keep=keep)[0]


def keep_clean(model: LoadedModel, prompts: Sequence[str]) -> bool:
    """Make sure a grid's clean residuals are kept (one clean pass when they are not, e.g. after a restart, when its
    answers came from the store); False when they cannot be: prompts of several lengths, or more than the budget."""
    plan = split_shared_prefix(model.tokenizer, prompts)
    if plan is None and not _uniform_length(model, prompts):
        return False
    state = _Kept((model.fingerprint, _prompts_key(prompts), plan is not None))
    if state.has_last(model) and all(state.layer(model, layer) is not None for layer in range(1, model.n_layers)):
        return True
    config = model.hf.config.get_text_config()
    positions = plan.suffix_length if plan is not None else len(model.tokenizer(prompts[0])["input_ids"])
    element = torch.finfo(model.hf.dtype).bits // 8
    needed = len(prompts) * element * ((model.n_layers - 1) * positions * config.hidden_size
                                       + config.hidden_size + model.d_mlp)
    if needed > kept.cache_for(model.device).budget:
        return False
    run(model, prompts)
    return state.has_last(model)


def run_side_by_side(model: LoadedModel, prompts: Sequence[str], interventions: Sequence[Intervention], *,
                     token_ids: torch.Tensor | None = None, logits: bool = False,
                     batch_size: int | None = None) -> list[Capture]:
    """``prompts`` under each of ``interventions`` as one batched pass (their rows side by side), each starting
    where the kept clean residuals allow: an ablation and its random control cost one trace, not two. The
    interventions must share their weight edits."""
    return _gather(model, prompts, interventions, token_ids=token_ids, logits=logits, batch_size=batch_size)


def neuron_gradients(
    model: LoadedModel, prompts: Sequence[str], layers: Sequence[int], good: torch.Tensor, bad: torch.Tensor,
    intervention: Intervention | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Last-position neurons and the gradient of ``sum_b log p(bad_b) - log p(good_b)`` with respect to them.

    One forward and one backward pass (attribution patching's linearisation), under ``intervention``; returns
    ``(activations, gradients)``, each layer -> ``[len(prompts), d_mlp]`` float32 on the host.
    """
    layers = sorted(layers)
    check_layers(model, layers)
    with intervened(model, intervention) as ops:
        result = run_pass(model, Pass(_inputs(model, prompts), ops=_on_prompts(ops, prompts),
                                      capture=dict.fromkeys(layers),
                                      gradient=(good.to(model.device), bad.to(model.device))))
    return (
        {layer: a.detach().float().cpu() for layer, a in result.neurons.items()},
        {layer: g.detach().float().cpu() for layer, g in result.gradients.items()},
    )


def pre_activations(model: LoadedModel, prompts: Sequence[str], layers: Selection,
                    intervention: Intervention | None = None, batch_size: int | None = None
                    ) -> dict[int, dict[str, torch.Tensor]]:
    """Last-position pre-activations of ``layers`` (layer -> neuron columns, None: all) over ``prompts``, float32 on
    the host: layer -> {"pre": [n, k]}, or {"gate": ..., "up": ...} for a gated MLP. Plain passes (no prefix cache,
    nothing kept): the helix fit reads them once per grid."""
    check_layers(model, list(layers))
    parts: dict[int, dict[str, list[torch.Tensor]]] = {}
    size = batch_size or default_batch_size(model, prompts, model.d_mlp * 2 * len(layers))
    with intervened(model, intervention) as ops:
        columns = {layer: None if c is None else torch.as_tensor(list(c), dtype=torch.long, device=model.device)
                   for layer, c in layers.items()}
        for lo in range(0, len(prompts), size):
            chunk = prompts[lo:lo + size]
            result = run_pass(model, Pass(_inputs(model, chunk), ops=_on_prompts(ops, chunk), pre=columns))
            for layer, points in result.pre.items():
                for name, values in points.items():
                    parts.setdefault(layer, {}).setdefault(name, []).append(values.float().cpu())
    return {layer: {name: torch.cat(v) for name, v in points.items()} for layer, points in parts.items()}
