"""MathNeuro's published scoring written straightforwardly: the check for neurolab's streaming pass (tests and
``benchmarks/bench_mathneuro.py``)."""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D


def reference_scores(model, modules, texts) -> dict[str, torch.Tensor]:
    """The published formula, straightforwardly: one sample per pass, a full |W| * ||X||_2 per sample, summed."""
    device = model.device
    totals = {name: torch.zeros(m.weight.shape, dtype=torch.float32, device=device) for name, m in modules.items()}
    captured: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=name: captured.__setitem__(n, args[0].detach()))
               for name, m in modules.items()]
    try:
        with torch.no_grad():
            for text in texts:
                ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
                model.hf(input_ids=ids.to(device), use_cache=False)
                for name, m in modules.items():
                    x = captured[name][0].float()  # [T, in]
                    norm = x.norm(dim=0)
                    w = m.weight.detach().float().abs()
                    totals[name] += w * (norm[:, None] if isinstance(m, Conv1D) else norm[None, :])
                captured.clear()
    finally:
        for h in handles:
            h.remove()
    return {name: t.cpu() for name, t in totals.items()}
