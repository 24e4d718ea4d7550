"""The embedded model's word-level tokenizer: one token per integer 0..999, per operator and per word.

One token per integer (as in Llama 3) makes every answer a single next token, which is what the heuristics method
needs. Built with ``tokenizers`` and wrapped in ``PreTrainedTokenizerFast`` so it saves and loads like any Hugging
Face tokenizer, through the same code path as a hub model's.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .arithmetic import OPERATORS
from .language import words

MAX_NUMBER = 999
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}


def vocabulary() -> list[str]:
    """Specials, then 0..999, then ``+ - * / =``, then the non-math words: ids are stable across builds."""
    return [*SPECIAL_TOKENS.values(), *map(str, range(MAX_NUMBER + 1)), *OPERATORS, "=", *words()]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer; ``23+45=`` splits into ``23 + 45 =`` and words split on spaces."""
    vocab = {token: i for i, token in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\d+|[a-z_]+|[^\sa-z_\d]"), "isolated")]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL_TOKENS)
    return tokenizer
