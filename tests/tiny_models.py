"""Tiny random-weight models of every supported family, built locally (no hub) and saved as safetensors folders."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTJConfig, GPTNeoXConfig, LlamaConfig

from neurolab.tasks.vocab import build_tokenizer

FAMILY_CONFIGS = {
    "gpt-neox": lambda v, s: GPTNeoXConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, max_position_embeddings=32, **s),
    "llama": lambda v, s: LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, **s),
    "gpt2": lambda v, s: GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=32, n_inner=64, **s),
    "gpt-j": lambda v, s: GPTJConfig(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=32, rotary_dim=4,
                                     n_inner=64, **s),
}


def save_tiny_model(folder: Path, family: str, seed: int = 0) -> Path:
    """A random-weight model of ``family`` with the embedded tokenizer, saved in Hugging Face format."""
    tokenizer = build_tokenizer()
    specials = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
    config = FAMILY_CONFIGS[family](len(tokenizer), specials)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # HF's init is tiny (std 0.02); larger weights make differences easy to see
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
