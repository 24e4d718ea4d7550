"""Running prompts through a model with nnsight: neuron activations, next-token logits, neuron ablations.

All ``model.trace()`` code lives here (nnsight reads a trace's source once per file, so it must not sit in a
hot-reloaded page). A batch of prompts is one trace, never a trace per prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nnsight
import torch

from ..models.adapters import get_module
from ..models.loading import LoadedModel

#: layer -> neuron indices whose activation is set to 0 at every position (the paper's ablation).
Ablation = Mapping[int, Sequence[int]]
#: layer -> (rows, neurons, values): set ``hidden[rows[i], -1, neurons[i]] = values[i]`` (activation patching).
Patch = Mapping[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class Capture:
    """What one run returns, at the last position of every prompt."""

    logits: torch.Tensor  # [batch, vocab], float32 on CPU
    neurons: dict[int, torch.Tensor]  # layer -> [batch, d_mlp], float32 on CPU


def _trace_batch(
    model: LoadedModel, inputs: dict[str, torch.Tensor], layers: Sequence[int], ablation: Ablation,
    remote: bool | str = False, patch: Patch | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass under nnsight: zero ablated neurons, patch neurons at the last position, save the
    captured neurons (after any edit) and the last-position logits."""
    lm = model.lm  # the trace body names only nnsight objects and tensors, so a remote run can serialise it
    patch = patch or {}
    touched = sorted(set(layers) | set(ablation) | set(patch))
    envoys = {layer: get_module(lm, model.adapter.mlp_out_path(layer)) for layer in touched}
    zeroed = {layer: torch.as_tensor(list(ablation[layer]), dtype=torch.long) for layer in ablation}
    options = {"remote": remote} if remote else {}  # True: NDIF (key from the environment); "local": dry run
    with torch.no_grad(), lm.trace(**inputs, **options):
        saved = []
        for layer in touched:  # modules must be visited in execution order
            hidden = envoys[layer].input
            if layer in zeroed:
                hidden[:, :, zeroed[layer]] = 0
            if layer in patch:
                rows, neurons, values = patch[layer]
                hidden[rows, -1, neurons] = values
            if layer in layers:
                saved.append(hidden[:, -1])
        captured = nnsight.save(saved)
        logits = nnsight.save(lm.output.logits[:, -1])
    return logits, captured


def run(
    model: LoadedModel,
    prompts: Sequence[str],
    layers: Sequence[int] | None = (),
    ablation: Ablation | None = None,
    batch_size: int = 4096,
    remote: bool | str = False,
    patch: Patch | None = None,
) -> Capture:
    """Run ``prompts`` in chunks of ``batch_size``; capture the neurons of ``layers`` (None = every layer).

    Returns last-position logits and activations ``[len(prompts), d_mlp]`` per captured layer. ``remote`` is
    passed to nnsight's trace: ``True`` runs on NDIF, ``"local"`` serialises the request and runs it here.
    ``patch`` rows index ``prompts`` as a whole; it needs a single chunk (``batch_size >= len(prompts)``).
    """
    if patch and len(prompts) > batch_size:
        raise ValueError("patching needs every prompt in one batch: raise batch_size")
    layers = list(range(model.n_layers)) if layers is None else sorted(set(layers))
    ablation = {int(k): list(v) for k, v in (ablation or {}).items() if len(v)}
    for layer in [*layers, *ablation, *(patch or {})]:
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    logits_parts: list[torch.Tensor] = []
    neuron_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with model.lock:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            inputs = {k: v.to(model.device) for k, v in model.encode(chunk).items()}
            logits, captured = _trace_batch(model, inputs, layers, ablation, remote, patch)
            logits_parts.append(logits.float().cpu())
            for layer, acts in zip(layers, captured):
                neuron_parts[layer].append(acts.float().cpu())
    return Capture(
        logits=torch.cat(logits_parts) if logits_parts else torch.empty(0),
        neurons={layer: torch.cat(parts) for layer, parts in neuron_parts.items() if parts},
    )


def neuron_gradients(
    model: LoadedModel, prompts: Sequence[str], layers: Sequence[int], good: torch.Tensor, bad: torch.Tensor
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Last-position neurons and the gradient of ``sum_b log p(bad_b) - log p(good_b)`` with respect to them.

    One forward and one backward pass (attribution patching's linearisation); returns
    ``(activations, gradients)``, each layer -> ``[len(prompts), d_mlp]``.
    """
    lm = model.lm
    layers = sorted(layers)
    envoys = [get_module(lm, model.adapter.mlp_out_path(layer)) for layer in layers]
    inputs = {k: v.to(model.device) for k, v in model.encode(list(prompts)).items()}
    rows = torch.arange(len(prompts))
    with model.lock, torch.enable_grad(), lm.trace(**inputs):
        hiddens = [envoy.input for envoy in envoys]
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
