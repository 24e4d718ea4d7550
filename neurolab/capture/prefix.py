"""Prompts that share their beginning: a grid's ``{op1}{op}{op2}=`` prompts share ``{op1}{op}`` with every other
prompt of the same op1, and a few-shot template shares its examples with the whole grid. Computing each prefix once
(its keys and values, the KV cache) and running only the suffixes makes a grid pass ~2x cheaper on the embedded
model, with the same answers (logits within 1e-4 in float32).

This module only splits token ids; :mod:`neurolab.capture.trace` runs the two passes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

#: a split pays when each prefix serves at least this many prompts
MIN_SHARING = 4


@dataclass
class SharedPrefix:
    """Prompts of one token length, as distinct prefixes ``[G, p]`` and each prompt's prefix row and suffix."""

    prefixes: torch.Tensor  # [G, p] token ids
    group: torch.Tensor  # [n] the prefix row of each prompt
    suffixes: torch.Tensor  # [n, L - p] token ids

    @property
    def prefix_length(self) -> int:
        return self.prefixes.shape[1]

    def subset(self, rows: torch.Tensor) -> SharedPrefix:
        """The split of some of the prompts (``rows``), continuing the same prefixes."""
        return SharedPrefix(self.prefixes, self.group[rows], self.suffixes[rows])

    @property
    def suffix_length(self) -> int:
        return self.suffixes.shape[1]

    def suffix_inputs(self, lo: int, hi: int, cache: DynamicCache, device: torch.device, copies: int = 1) -> dict:
        """Model inputs of prompts lo..hi that continue ``cache`` (the prefixes' keys and values). With ``copies``
        > 1 the cache holds that many copies of the prefixes, one after another (one per intervention run side by
        side), and the inputs are prompts lo..hi once per copy, continuing their own copy."""
        n_prefixes = len(self.prefixes)
        rows = torch.cat([self.group[lo:hi] + c * n_prefixes for c in range(copies)]).to(device)
        past = DynamicCache(ddp_cache_data=[(layer.keys[rows], layer.values[rows]) for layer in cache.layers])
        p, s, n = self.prefix_length, self.suffix_length, copies * (hi - lo)
        return {
            "input_ids": self.suffixes[lo:hi].repeat(copies, 1).to(device),
            "attention_mask": torch.ones(n, p + s, dtype=torch.long, device=device),
            "position_ids": torch.arange(p, p + s, device=device).expand(n, s),
            "past_key_values": past,
        }


_SPLITS: OrderedDict[tuple, SharedPrefix | None] = OrderedDict()


def split_shared_prefix(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> SharedPrefix | None:
    """The longest prefix that at least :data:`MIN_SHARING` prompts share on average, or None (prompts of several
    token lengths, or nothing worth sharing): then the plain pass runs. The last few splits are kept: tokenizing a
    grid costs a third of its pass, and an ablation toggled on and off runs the same grid again and again."""
    key = (id(tokenizer), len(prompts), hash(tuple(prompts)))
    if key not in _SPLITS:
        _SPLITS[key] = _split(tokenizer, prompts)
        while len(_SPLITS) > 8:
            _SPLITS.popitem(last=False)
    return _SPLITS[key]


def _split(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> SharedPrefix | None:
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if len(ids) < 2 * MIN_SHARING or len({len(row) for row in ids}) != 1 or len(ids[0]) < 2:
        return None
    tokens = torch.tensor(ids)
    length = tokens.shape[1]
    for suffix in range(1, length):
        prefixes, group = torch.unique(tokens[:, : length - suffix], dim=0, return_inverse=True)
        if len(prefixes) * MIN_SHARING <= len(tokens):
            return SharedPrefix(prefixes, group, tokens[:, length - suffix:])
    return None
