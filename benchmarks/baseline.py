"""What every benchmark compares with: a plain batched forward pass, no nnsight, nothing captured."""

from __future__ import annotations

import torch


def plain_forward(model, prompts: list[str], batch: int) -> None:
    """The same batches, last-position logits only, top-1 and its probability reduced on the device."""
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            inputs = {k: v.to(model.device) for k, v in model.encode(prompts[start:start + batch]).items()}
            logits = model.hf(**inputs, logits_to_keep=1).logits[:, -1]
            prob, top = logits.float().softmax(-1).max(-1)
            top.cpu(), prob.cpu()
