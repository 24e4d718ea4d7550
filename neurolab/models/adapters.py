"""Architecture adapters: one small table entry per model family, and nothing else that knows about families.

An adapter only names where things live in the Hugging Face module tree (as pyvene's per-model mappings do);
every computation is written once against these names. A neuron is one coordinate of the *input* of the MLP's
down/out projection (TransformerLens ``blocks.L.mlp.hook_post``), as ``../shared/science.md`` defines it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers.pytorch_utils import Conv1D

from ..errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where one family keeps its parts; paths are dotted attribute paths from the causal-LM module."""

    family: str
    model_types: tuple[str, ...]
    layers: str  # the ModuleList of blocks
    mlp_out: str  # the down/out projection inside a block; its input holds the neurons
    attention: str  # the attention module inside a block
    final_norm: str
    unembed: str
    embed: str
    gated: bool  # gated MLP (act(gate) * up): neurons can be negative, so heuristics also score bottom-k
    attn_out: str = ""  # the attention output projection inside a block; its input is the heads' outputs, side by side
    mlp: str = "mlp"  # the MLP module inside a block; its output is the MLP's contribution to the residual stream
    n_heads_attr: str = "num_attention_heads"  # the text config's attribute holding the number of (query) heads
    block_returns_tuple: bool = False  # a block returns (hidden_states, attention weights), not hidden_states alone
    mlp_in: str = ""  # the up/in projection inside a block; its output is the pre-activation (the anatomy's helix fit)
    mlp_gate: str = ""  # gated MLPs: the gate projection (neuron = act(gate) * up)
    mlp_act: str = ""  # the MLP's activation function module (applied to a fitted pre-activation)
    mlp_norm: str = ""  # the norm in front of the MLP (its scale enters the virtual weights between neurons)

    def block_output(self, hidden: torch.Tensor):
        """What a block returns given its output residual (what a skipped block must return)."""
        return (hidden, None) if self.block_returns_tuple else hidden

    def layer_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}"

    def mlp_out_path(self, layer: int) -> str:
        """The HF module whose *input* is the neuron vector of ``layer``."""
        return f"{self.layer_path(layer)}.{self.mlp_out}"

    def attention_path(self, layer: int) -> str:
        return f"{self.layer_path(layer)}.{self.attention}"

    def attn_out_path(self, layer: int) -> str:
        """The HF module whose *input* ``[..., n_heads * d_head]`` holds head h's output in columns
        ``h * d_head:(h + 1) * d_head`` (before the output projection mixes them): the per-head patching point."""
        return f"{self.layer_path(layer)}.{self.attn_out}"

    def mlp_path(self, layer: int) -> str:
        """The HF module whose *output* is the MLP's contribution to the residual stream of ``layer``."""
        return f"{self.layer_path(layer)}.{self.mlp}"

    def pre_activation_paths(self, layer: int) -> dict[str, str]:
        """The HF modules whose *output* is ``layer``'s pre-activation: ``{"pre": ...}``, or for a gated MLP
        ``{"gate": ..., "up": ...}`` (in execution order)."""
        block = self.layer_path(layer)
        if self.mlp_gate:
            return {"gate": f"{block}.{self.mlp_gate}", "up": f"{block}.{self.mlp_in}"}
        return {"pre": f"{block}.{self.mlp_in}"}

    def n_heads(self, config) -> int:
        """Attention (query) heads per layer, from a model config (its text config when it has one)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(getattr(text, self.n_heads_attr))


def hook_name(layer: int) -> str:
    """The TransformerLens-style canonical name of a layer's neurons, shown beside the HF path."""
    return f"blocks.{layer}.mlp.hook_post"


def neuron_label(layer: int, neuron: int) -> str:
    """How a neuron is written everywhere in neurolab: ``L3N12``."""
    return f"L{layer}N{neuron}"


def parse_neuron_label(text: str) -> tuple[int, int]:
    """``"L3N12"`` (case and spaces ignored) -> ``(3, 12)``; a ValueError saying the expected form otherwise."""
    match = re.fullmatch(r"\s*L\s*(\d+)\s*N\s*(\d+)\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a neuron: write L<layer>N<neuron>, e.g. L3N12")
    return int(match.group(1)), int(match.group(2))


ADAPTERS: tuple[ArchitectureAdapter, ...] = (
    ArchitectureAdapter(
        family="gpt-neox", model_types=("gpt_neox",), layers="gpt_neox.layers", mlp_out="mlp.dense_4h_to_h",
        attention="attention", final_norm="gpt_neox.final_layer_norm", unembed="lm_head",
        embed="gpt_neox.embed_in", gated=False, attn_out="attention.dense", mlp="mlp",
        n_heads_attr="num_attention_heads", mlp_in="mlp.dense_h_to_4h", mlp_act="mlp.act",
        mlp_norm="post_attention_layernorm",
    ),
    ArchitectureAdapter(
        family="llama", model_types=("llama", "mistral", "qwen2", "qwen3"), layers="model.layers",
        mlp_out="mlp.down_proj", attention="self_attn", final_norm="model.norm", unembed="lm_head",
        embed="model.embed_tokens", gated=True, attn_out="self_attn.o_proj", mlp="mlp",
        n_heads_attr="num_attention_heads", mlp_in="mlp.up_proj", mlp_gate="mlp.gate_proj", mlp_act="mlp.act_fn",
        mlp_norm="post_attention_layernorm",
    ),
    ArchitectureAdapter(
        family="gpt2", model_types=("gpt2",), layers="transformer.h", mlp_out="mlp.c_proj", attention="attn",
        final_norm="transformer.ln_f", unembed="lm_head", embed="transformer.wte", gated=False,
        attn_out="attn.c_proj", mlp="mlp", n_heads_attr="n_head", mlp_in="mlp.c_fc", mlp_act="mlp.act",
        mlp_norm="ln_2",
    ),
    ArchitectureAdapter(
        family="gpt-j", model_types=("gptj",), layers="transformer.h", mlp_out="mlp.fc_out", attention="attn",
        final_norm="transformer.ln_f", unembed="lm_head", embed="transformer.wte", gated=False,
        attn_out="attn.out_proj", mlp="mlp", n_heads_attr="n_head", block_returns_tuple=True,
        mlp_in="mlp.fc_in", mlp_act="mlp.act", mlp_norm="ln_1",
    ),
)


def supported_model_types() -> list[str]:
    return sorted(t for adapter in ADAPTERS for t in adapter.model_types)


def adapter_for(model_type: str) -> ArchitectureAdapter:
    """The adapter of a config's ``model_type``, or an error naming every supported one."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedArchitectureError(
        f"neurolab has no adapter for model_type {model_type!r}; supported: {', '.join(supported_model_types())}. "
        "Adding a family is one entry in neurolab/models/adapters.py."
    )


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """``get_module(model, "gpt_neox.layers.3.mlp")``; works on nnsight Envoys too (digits index lists)."""
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def is_projection(module: torch.nn.Module) -> bool:
    """A weight matrix applied to its input: ``nn.Linear``, or GPT-2's ``Conv1D`` (the same map, stored transposed).

    ``nn.Linear`` stores its weight ``[out, in]``, ``Conv1D`` ``[in, out]``. This module is the one place that knows;
    everything else asks :func:`out_in_axes`, :func:`in_out_features` or :func:`weight_as_out_in`."""
    return isinstance(module, (torch.nn.Linear, Conv1D))


def out_in_axes(module: torch.nn.Module) -> tuple[int, int]:
    """The dimensions of a projection's weight holding its (outputs, inputs)."""
    return (1, 0) if isinstance(module, Conv1D) else (0, 1)


def in_out_features(module: torch.nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a projection."""
    out_axis, in_axis = out_in_axes(module)
    shape = module.weight.shape
    return int(shape[in_axis]), int(shape[out_axis])


def weight_as_out_in(module: torch.nn.Module, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """A view ``[out, in]`` of the projection's weight, or of ``tensor`` laid out like it (scores, masks): writes
    through it land in the original layout."""
    return (module.weight if tensor is None else tensor).permute(out_in_axes(module))


def value_vectors(projection: torch.nn.Module) -> torch.Tensor:
    """Rows ``W_out[n]`` of a down projection, ``[d_mlp, d_model]``: its weight as ``[in, out]``."""
    return weight_as_out_in(projection).T
