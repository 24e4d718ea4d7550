"""Running prompts through a model with nnsight: neuron activations, next-token logits, neuron ablations.

All ``model.trace()`` code lives here (nnsight reads a trace's source once per file, so it must not sit in a
hot-reloaded page). A batch of prompts is one trace, never a trace per prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nnsight
import torch

from .adapters import get_module
from .model import LoadedModel

#: layer -> neuron indices whose activation is set to 0 at every position (the paper's ablation).
Ablation = Mapping[int, Sequence[int]]


@dataclass
class Capture:
    """What one run returns, at the last position of every prompt."""

    logits: torch.Tensor  # [batch, vocab], float32 on CPU
    neurons: dict[int, torch.Tensor]  # layer -> [batch, d_mlp], float32 on CPU


def _trace_batch(
    model: LoadedModel, inputs: dict[str, torch.Tensor], layers: Sequence[int], ablation: Ablation,
    remote: bool | str = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass under nnsight: zero the ablated neurons, save the captured ones, save the logits."""
    lm = model.lm  # the trace body names only nnsight objects and tensors, so a remote run can serialise it
    touched = sorted(set(layers) | set(ablation))
    envoys = {layer: get_module(lm, model.adapter.mlp_out_path(layer)) for layer in touched}
    zeroed = {layer: torch.as_tensor(list(ablation[layer]), dtype=torch.long) for layer in ablation}
    options = {"remote": remote} if remote else {}  # True: NDIF (key from the environment); "local": dry run
    with torch.no_grad(), lm.trace(**inputs, **options):
        saved = []
        for layer in touched:  # modules must be visited in execution order
            hidden = envoys[layer].input
            if layer in zeroed:
                hidden[:, :, zeroed[layer]] = 0
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
) -> Capture:
    """Run ``prompts`` in chunks of ``batch_size``; capture the neurons of ``layers`` (None = every layer).

    Returns last-position logits and activations ``[len(prompts), d_mlp]`` per captured layer. ``remote`` is
    passed to nnsight's trace: ``True`` runs on NDIF, ``"local"`` serialises the request and runs it here.
    """
    layers = list(range(model.n_layers)) if layers is None else sorted(set(layers))
    ablation = {int(k): list(v) for k, v in (ablation or {}).items() if len(v)}
    for layer in [*layers, *ablation]:
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")
    logits_parts: list[torch.Tensor] = []
    neuron_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with model.lock:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            inputs = {k: v.to(model.device) for k, v in model.encode(chunk).items()}
            logits, captured = _trace_batch(model, inputs, layers, ablation, remote)
            logits_parts.append(logits.float().cpu())
            for layer, acts in zip(layers, captured):
                neuron_parts[layer].append(acts.float().cpu())
    return Capture(
        logits=torch.cat(logits_parts) if logits_parts else torch.empty(0),
        neurons={layer: torch.cat(parts) for layer, parts in neuron_parts.items() if parts},
    )
