"""Loading any model safely: clear errors for bad input, content fingerprints, one lock across threads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from neurolab.capture.trace import run
from neurolab.errors import ModelLoadError, UnsupportedArchitectureError
from neurolab.models.loading import MODEL_LOCK, load_model
from neurolab.tasks.vocab import build_tokenizer

from .tiny_models import save_tiny_model


def test_missing_folder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="no model folder"):
        load_model("./no/such/model")


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="not a local model folder"):
        load_model("nobody-xyz/no-such-model")


def test_folder_without_safetensors_is_refused(tmp_path):
    folder = save_tiny_model(tmp_path / "m", "gpt-neox")
    model = AutoModelForCausalLM.from_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle: must never be loaded
    with pytest.raises(ModelLoadError, match="never loads pickled"):
        load_model(str(folder))


def test_unsupported_family_names_the_supported_ones(tmp_path):
    tokenizer = build_tokenizer()
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                       num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=32)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox.*gptj.*llama"):
        load_model(str(tmp_path))


def test_fingerprint_follows_content_not_location(tmp_path, tiny_model_dirs):
    original = tiny_model_dirs["gpt-neox"]
    copy = shutil.copytree(original, tmp_path / "copy")
    other = save_tiny_model(tmp_path / "other", "gpt-neox", seed=1)
    a, b, c = load_model(str(original)), load_model(str(copy)), load_model(str(other))
    assert a is not b
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert load_model(str(original)) is a  # loaded once per process


def test_cli_reports_bad_model_without_traceback():
    result = subprocess.run([sys.executable, "-m", "neurolab", "eval", "--model", "/no/such/dir"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: no model folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_threads_share_one_lock_and_get_serial_results(tiny_model_dirs):
    model = load_model(str(tiny_model_dirs["llama"]))
    assert model.lock is MODEL_LOCK
    prompts = [f"{a}+{b}=" for a in range(20) for b in range(5)]
    expected = run(model, prompts, layers=None, logits=True)
    results, errors = {}, []

    def worker(i: int) -> None:
        try:
            results[i] = run(model, prompts, layers=None, batch_size=17, logits=True)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results.values():
        assert torch.allclose(got.logits, expected.logits, atol=1e-5)
        for layer in expected.neurons:
            assert torch.allclose(got.neurons[layer], expected.neurons[layer], atol=1e-5)
