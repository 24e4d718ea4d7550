"""`python -m neurolab train` still runs end to end, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from neurolab.models.loading import load_model
from neurolab.train.training import PRESETS, train


def test_cli_trains_a_tiny_model_that_loads_through_the_core(tmp_path):
    out = tmp_path / "tiny"
    result = subprocess.run(
        [sys.executable, "-m", "neurolab", "train", "--preset", "tiny", "--out", str(out),
         "--state-dir", str(tmp_path / "state"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stdout
    meta = json.loads((out / "neurolab.json").read_text())
    assert meta["checkpoints"] == ["step-00004", "step-00008"]
    assert [h["step"] for h in meta["history"]] == [4, 8, 12]
    model = load_model(str(out))
    assert model.adapter.family == "gpt-neox" and model.max_single_token == 999
    card = (out / "README.md").read_text()
    assert "| `+` |" in card and "| `nonmath` |" in card
    checkpoint = load_model(str(out / "checkpoints" / "step-00004"))
    assert checkpoint.fingerprint != model.fingerprint


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    config = PRESETS["tiny"]
    train(config, tmp_path / "straight", tmp_path / "state-a")

    def stop_at_6(step: int, total: int, stage: str) -> None:
        if step == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path / "resumed", tmp_path / "state-b", progress=stop_at_6)
    state = json.loads((tmp_path / "state-b" / config.name / "state.json").read_text())
    assert state["step"] == 4  # last saved state before the interruption
    train(config, tmp_path / "resumed", tmp_path / "state-b")
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() == 0, key
