"""MathNeuro's forward pass: per input feature j of every scored weight, ``sum over samples of ||X_j||_2``, where
``X_j`` is feature j of the module's input over one sample's real tokens.

One streaming pass over batches of left-padded samples (``model.encode``), plain PyTorch forward pre-hooks on the
scored modules, fp32 accumulators of one ``[in]`` vector per module: memory O(parameters), never an ``[out, in]``
tensor per sample. Padded positions are masked out (they never count). Weight edits of an intervention apply (via
:func:`~neurolab.capture.trace.intervened`, which holds the model lock); neuron ablations and patches are ignored
here (they act inside nnsight traces; MathNeuro scores weights of the model as its weights stand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..models.adapters import in_out_features
from ..models.loading import LoadedModel
from ..progress import Progress, report
from .interventions import Intervention
from .trace import intervened


def input_norms(model: LoadedModel, modules: Mapping[str, torch.nn.Module], texts: Sequence[str],
                batch_size: int = 32, intervention: Intervention | None = None,
                progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """name -> fp32 ``[in]`` on the host: ``sum_s sqrt(sum_{t real in s} X[s, t, j]^2)``."""
    device = model.device
    sums = {name: torch.zeros(in_out_features(m)[0], dtype=torch.float32, device=m.weight.device)
            for name, m in modules.items()}
    state: dict = {"mask": None, "last": None}

    def hook_for(name: str):
        def hook(module, args):
            x = args[0]
            last = state["last"]
            if last is not None and last[0] is x:  # q/k/v (or gate/up) share one input: reduce it once
                norms = last[1]
            else:
                mask = state["mask"].to(x.device)
                squares = (x.float().square() * mask[..., None]).sum(dim=1)  # [batch, in]
                norms = squares.sqrt().sum(dim=0)
                state["last"] = (x, norms)
            sums[name] += norms.to(sums[name].device)
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in modules.items()]
    try:
        with intervened(model, intervention), torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = list(texts[start:start + batch_size])
                inputs = {k: v.to(device) for k, v in model.encode(batch).items()}
                state["mask"], state["last"] = inputs["attention_mask"].float(), None
                model.hf(**inputs, use_cache=False)
                report(progress, min(start + batch_size, len(texts)), len(texts))
    finally:
        for handle in handles:
            handle.remove()
        state.clear()
    return {name: total.cpu() for name, total in sums.items()}
