"""The model core on every supported family: nnsight capture, padding, ablation and adapters agree with PyTorch."""

from __future__ import annotations

import pytest
import torch

from neurolab.capture.trace import run
from neurolab.errors import UnsupportedArchitectureError
from neurolab.models.adapters import adapter_for, get_module, hook_name, supported_model_types

PROMPTS = ["23+45=", "after monday comes", "capital of france is 3+4=", "5=", "opposite of hot is", "7 * 8 ="]


def hook_activations(model, prompts) -> dict[int, torch.Tensor]:
    """Reference: the neurons at the last position read with plain PyTorch forward pre-hooks."""
    found: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(model.n_layers):
        module = get_module(model.hf, model.adapter.mlp_out_path(layer))

        def hook(_module, args, layer=layer):
            found[layer] = args[0][:, -1].detach().clone()

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.hf(**model.encode(prompts))
    finally:
        for handle in handles:
            handle.remove()
    return found


def test_nnsight_capture_equals_pytorch_hooks(tiny_model):
    capture = run(tiny_model, PROMPTS, layers=None)
    reference = hook_activations(tiny_model, PROMPTS)
    assert sorted(capture.neurons) == list(range(tiny_model.n_layers))
    for layer, acts in capture.neurons.items():
        assert acts.shape == (len(PROMPTS), tiny_model.d_mlp)
        assert acts.abs().max() > 1e-3  # not trivially zero
        assert (acts - reference[layer]).abs().max() < 1e-5


def test_batched_with_padding_equals_unbatched(tiny_model):
    lengths = {len(tiny_model.encode([p])["input_ids"][0]) for p in PROMPTS}
    assert len(lengths) > 2, "the prompts must need padding"
    batched = run(tiny_model, PROMPTS, layers=None, logits=True)
    for i, prompt in enumerate(PROMPTS):
        alone = run(tiny_model, [prompt], layers=None, logits=True)
        assert (alone.logits[0] - batched.logits[i]).abs().max() < 1e-4
        for layer in alone.neurons:
            assert (alone.neurons[layer][0] - batched.neurons[layer][i]).abs().max() < 1e-5


def test_adapter_describes_the_model(tiny_model):
    vv = tiny_model.value_vectors(0)
    d_model = tiny_model.hf.config.get_text_config().hidden_size
    assert vv.shape == (tiny_model.d_mlp, d_model) == (64, 32)
    assert tiny_model.n_layers == 2
    assert hook_name(1) == "blocks.1.mlp.hook_post"
    for path in (tiny_model.adapter.final_norm, tiny_model.adapter.unembed, tiny_model.adapter.embed,
                 tiny_model.adapter.attention_path(1)):
        assert isinstance(get_module(tiny_model.hf, path), torch.nn.Module)
    assert tiny_model.gated == (tiny_model.adapter.family == "llama")
    assert tiny_model.max_single_token == 999


def test_gated_neurons_can_be_negative(tiny_model_dirs):
    from neurolab.models.loading import load_model

    model = load_model(str(tiny_model_dirs["llama"]))
    acts = run(model, PROMPTS, layers=[0]).neurons[0]
    assert (acts < -1e-3).any() and (acts > 1e-3).any()


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as error:
        adapter_for("bert")
    for name in ("gpt_neox", "llama", "gpt2", "gptj"):
        assert name in str(error.value)
    assert set(supported_model_types()) >= {"gpt_neox", "llama", "gpt2", "gptj"}
