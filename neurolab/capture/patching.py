"""Activation patching of components: each layer's MLP output and each attention head, at each position.

The clean prompts run with one component at one position replaced by its value on the paired counterfactual
(corrupt) prompt, and the effect on the clean answer is measured. Components:

- a layer's **MLP**: the output of the block's MLP module (its whole contribution to the residual stream);
- a **head** (layer, h): columns ``h * d_head:(h + 1) * d_head`` of the attention output projection's *input*, i.e.
  the head's output before the projection mixes the heads (the standard per-head patching point).

Metrics, per prompt pair (r: the clean answer, r': the counterfactual's), averaged over pairs:

- ``logit_diff``: how far the patch moves LD = logit(r) - logit(r') at the last position, LD_clean - LD_patched
  (logits; 0: no effect; positive: towards the counterfactual answer);
- ``fraction``: mean(LD_clean - LD_patched) / mean(LD_clean - LD_corrupt), the share of the whole clean ->
  counterfactual swing that this one patch achieves (1: as if the prompt were the counterfactual; NaN when the
  swing is 0);
- ``ie``: ``../shared/science.md``'s indirect effect IE = ½ [(p*(r') - p(r'))/p(r') + (p(r) - p*(r))/p*(r)] (p
  before, p* after the patch), with ``ie_std`` its spread over pairs.

Batched like neuron activation patching: one trace runs ``k`` copies of the clean batch, copy i carrying the i-th
(component, position) patch, so a pass costs ``k * len(clean)`` rows. Positions before the first token where any
clean/corrupt pair differs are identical in both runs (causal attention), so their effect is exactly 0 and they
cost no pass. A big model restricts ``layers`` (and ``positions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..models.adapters import get_module, in_out_features
from ..models.loading import LoadedModel
from ..progress import Progress, report
from .interventions import Intervention, check_layers
from .trace import Pass, _inputs, default_batch_size, intervened, run_pass

METRICS = ("fraction", "logit_diff", "ie")


@dataclass(frozen=True)
class Component:
    """A layer's MLP (``head`` None) or one attention head."""

    layer: int
    head: int | None = None

    @property
    def label(self) -> str:
        return f"L{self.layer} MLP" if self.head is None else f"L{self.layer}H{self.head}"


def n_heads(model: LoadedModel) -> int:
    return model.adapter.n_heads(model.hf.config)


def head_width(model: LoadedModel) -> int:
    """d_head: the output projection's input width over the number of heads."""
    projection = get_module(model.hf, model.adapter.attn_out_path(0))
    width, _ = in_out_features(projection)
    return width // n_heads(model)


def components(model: LoadedModel, layers: Sequence[int] | None = None, heads: bool = True,
               mlp: bool = True) -> list[Component]:
    """Per layer: its MLP, then its heads in order (the heatmap's row order)."""
    layers = range(model.n_layers) if layers is None else sorted(set(layers))
    check_layers(model, layers)
    found: list[Component] = []
    for layer in layers:
        if mlp:
            found.append(Component(layer))
        if heads:
            found.extend(Component(layer, h) for h in range(n_heads(model)))
    return found


def _encode_aligned(model: LoadedModel, clean: Sequence[str], corrupt: Sequence[str]) -> tuple[dict, dict]:
    if len(clean) != len(corrupt) or not clean:
        raise InputError(f"patching needs as many counterfactual prompts as clean ones (and at least one): got "
                         f"{len(clean)} clean, {len(corrupt)} counterfactual")
    tokens = model.tokenizer(list(clean) + list(corrupt), add_special_tokens=False)["input_ids"]
    lengths = {len(t) for t in tokens}
    if len(lengths) > 1:
        pairs = zip(clean, corrupt, tokens[:len(clean)], tokens[len(clean):])
        bad = next(((c, x, len(a), len(b)) for c, x, a, b in pairs if len(a) != len(b)), None)
        where = (f"e.g. {bad[0]!r} is {bad[2]} tokens but its counterfactual {bad[1]!r} is {bad[3]}" if bad
                 else f"lengths {sorted(lengths)}")
        raise InputError(f"patching by position needs every clean and counterfactual prompt to be the same number of "
                         f"tokens, so that positions align; {where}. Pick prompts of one length.")
    return _inputs(model, clean), _inputs(model, corrupt)


def _answer_stats(logits: torch.Tensor, answers: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per row: logit(r) - logit(r') and the probabilities of (r, r'); ``answers`` is ``[rows, 2]``."""
    logits = logits.float()
    picked = logits.gather(1, answers)
    probs = logits.softmax(-1).gather(1, answers)
    return (picked[:, 0] - picked[:, 1]).cpu().double().numpy(), probs.cpu().double().numpy()


def patch_components(
    model: LoadedModel, clean: Sequence[str], corrupt: Sequence[str], answers_clean: Sequence[int] | torch.Tensor,
    answers_corrupt: Sequence[int] | torch.Tensor, intervention: Intervention | None = None, *,
    layers: Sequence[int] | None = None, positions: Sequence[int] | None = None, heads: bool = True,
    mlp: bool = True, batch_size: int | None = None, progress: Progress | None = None,
) -> pd.DataFrame:
    """Effect of patching each component at each position from the corrupt prompts into the clean ones.

    ``answers_*`` are token ids (r, r') per pair. ``layers`` restricts the layers (default all), ``positions`` the
    positions (default all; negative counts from the end), ``heads`` / ``mlp`` the kinds. Everything runs under
    ``intervention`` (the corrupt values too). ``batch_size`` bounds the rows of one trace. Returns one row per
    (component, position): component, layer, head (<NA> for an MLP), position, token (of the first clean prompt),
    fraction, logit_diff, ie, ie_std (see the module's docstring), pairs.
    """
    chosen = components(model, layers, heads, mlp)
    patch_layers = sorted({c.layer for c in chosen})
    clean_in, corrupt_in = _encode_aligned(model, clean, corrupt)
    n, seq = clean_in["input_ids"].shape
    all_positions = list(range(seq)) if positions is None else sorted({p % seq for p in positions if -seq <= p < seq})
    if positions is not None and len(all_positions) != len(set(positions)):
        raise InputError(f"positions {list(positions)}: the prompts have positions 0..{seq - 1}")
    differs = (clean_in["input_ids"] != corrupt_in["input_ids"]).any(0).nonzero()
    first = int(differs[0]) if len(differs) else seq
    live = [p for p in all_positions if p >= first]
    answers = torch.stack([torch.as_tensor(answers_clean), torch.as_tensor(answers_corrupt)], 1).long()
    answers = answers.to(model.device)
    d_head = head_width(model) if heads else 0
    jobs = [(c, p) for c in chosen for p in live]
    ld_drop = np.zeros((len(jobs), n))
    ie = np.zeros((len(jobs), n))
    with intervened(model, intervention) as ops:
        corrupt_run = run_pass(model, Pass(corrupt_in, ops=ops, components=patch_layers))
        ld_corrupt, _ = _answer_stats(corrupt_run.logits, answers)
        values = corrupt_run.components  # layer -> (heads [n, S, H*d], MLP output [n, S, d_model])
        # the clean run keeps the residual entering each patched layer: a patch at layer L reruns layers L.. only
        clean_run = run_pass(model, Pass(clean_in, ops=ops, residuals=patch_layers))
        ld_clean, p_clean = _answer_stats(clean_run.logits, answers)
        size = batch_size or default_batch_size(model, list(clean), 0)
        per_pass = max(1, size // n)
        report(progress, 0, len(jobs), "patching")
        for lo in range(0, len(jobs), per_pass):
            group = jobs[lo:lo + per_pass]
            k = len(group)
            inputs = {key: value.repeat(k, 1) for key, value in clean_in.items()}
            head_patches, mlp_patches = _patches(model, group, values, n, d_head)
            start = min(c.layer for c, _ in group)
            resume = (start, clean_run.residuals[start].repeat(k, 1, 1)) if start > 0 else None
            patched = run_pass(model, Pass(inputs, ops=ops, head_patches=head_patches, mlp_patches=mlp_patches,
                                           resume=resume))
            ld, p = _answer_stats(patched.logits, answers.repeat(k, 1))
            ld_drop[lo:lo + k] = ld_clean[None] - ld.reshape(k, n)
            after = p.reshape(k, n, 2)
            ie[lo:lo + k] = 0.5 * ((after[..., 1] - p_clean[:, 1]) / p_clean[:, 1]
                                   + (p_clean[:, 0] - after[..., 0]) / after[..., 0])
            report(progress, lo + k, len(jobs), "patching")
    swing = float(np.mean(ld_clean - ld_corrupt))
    tokens = [model.token_str(t) for t in clean_in["input_ids"][0].tolist()]
    index = {job: i for i, job in enumerate(jobs)}
    rows = []
    for c in chosen:
        for p in all_positions:
            i = index.get((c, p))
            drop = 0.0 if i is None else float(ld_drop[i].mean())
            rows.append({
                "component": c.label, "layer": c.layer, "head": c.head, "position": p, "token": tokens[p],
                "fraction": drop / swing if abs(swing) > 1e-9 else float("nan"), "logit_diff": drop,
                "ie": 0.0 if i is None else float(ie[i].mean()), "ie_std": 0.0 if i is None else float(ie[i].std()),
                "pairs": n,
            })
    frame = pd.DataFrame(rows)
    frame["head"] = frame["head"].astype("Int64")
    return frame


def _patches(model: LoadedModel, group: list[tuple[Component, int]], values: dict, n: int, d_head: int):
    """Index tensors of one pass: copy i of the clean batch (rows i*n .. i*n+n-1) carries ``group[i]``'s patch."""
    device = model.device
    by_layer: dict[tuple[int, bool], list[tuple[int, Component, int]]] = {}
    for i, (c, p) in enumerate(group):
        by_layer.setdefault((c.layer, c.head is None), []).append((i, c, p))
    source = torch.arange(n, device=device)
    head_patches, mlp_patches = {}, {}
    for (layer, is_mlp), items in by_layer.items():
        copies = torch.as_tensor([i for i, _, _ in items], device=device)
        rows = (copies[:, None] * n + source[None]).reshape(-1)  # [m]
        src = source.repeat(len(items))
        positions = torch.as_tensor([p for _, _, p in items], device=device).repeat_interleave(n)
        heads_out, mlp_out = values[layer]
        if is_mlp:
            mlp_patches[layer] = (rows, positions, mlp_out[src, positions])
        else:
            starts = torch.as_tensor([c.head * d_head for _, c, _ in items], device=device).repeat_interleave(n)
            columns = starts[:, None] + torch.arange(d_head, device=device)[None]  # [m, d_head]
            rows2, positions2 = rows[:, None].expand_as(columns), positions[:, None].expand_as(columns)
            head_patches[layer] = (rows2, positions2, columns,
                                   heads_out[src[:, None].expand_as(columns), positions2, columns])
    return head_patches, mlp_patches
