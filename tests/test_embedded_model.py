"""The shipped model: loads like a hub model, meets its accuracy bars on held-out pairs, has its checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from neurolab.analysis.evaluation import evaluate
from neurolab.models.loading import load_model
from neurolab.paths import MODELS_DIR, embedded_model_dir
from neurolab.tasks.splits import heldout_pairs
from neurolab.tasks.vocab import build_tokenizer
from neurolab.train.modelcard import BARS
from neurolab.train.training import PRESETS, build_dataset


def test_accuracy_bars_on_a_sample_of_the_heldout_pairs(embedded):
    result = evaluate(embedded, sample=300, seed=1)
    assert result.split.startswith("held-out pairs")
    for task, bar in BARS.items():
        assert result.scores[task].accuracy >= bar, (task, result.scores[task])
    assert result.scores["+"].total == 300 and result.scores["nonmath"].total == 236


def test_heldout_pairs_were_never_trained_on(embedded):
    held = heldout_pairs(Path(embedded.source))
    data = build_dataset(PRESETS["default"], build_tokenizer())
    for op, pairs in held.items():
        assert pairs == data.heldout_pairs[op]
        trained = {tuple(ex.ids) for ex in data.train[op]}
        tokenizer = embedded.tokenizer
        for a, b in pairs[:50]:
            assert tuple(tokenizer(f"{a}{op}{b}=", add_special_tokens=False)["input_ids"]) not in trained


def test_cli_eval_json():
    result = subprocess.run([sys.executable, "-m", "neurolab", "eval", "--json", "--sample", "100"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["accuracy"]) == {"+", "-", "*", "/", "nonmath"}
    assert report["accuracy"]["+"] >= 0.95


def test_cli_eval_of_a_model_neurolab_did_not_train_uses_the_grid(tiny_model_dirs):
    result = subprocess.run([sys.executable, "-m", "neurolab", "eval", "--model", str(tiny_model_dirs["gpt2"]),
                             "--max-op", "20", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["split"] == "full grid, max_op=20" and report["counts"]["+"]["total"] == 400


def test_checkpoints_load_and_learn_over_training(embedded):
    meta = json.loads((embedded_model_dir() / "neurolab.json").read_text())
    assert len(meta["checkpoints"]) >= 6
    first = load_model(str(embedded_model_dir() / "checkpoints" / meta["checkpoints"][0]))
    assert first.adapter.family == "gpt-neox" and first.fingerprint != embedded.fingerprint
    early = evaluate(first, sample=200).scores["+"].accuracy
    assert early < 0.5 < evaluate(embedded, sample=200).scores["+"].accuracy
    steps = [h["step"] for h in meta["history"]]
    assert steps == sorted(steps) and steps[-1] == meta["recipe"]["steps"]


def test_artifacts_are_small_and_documented():
    size = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file())
    assert size < 40 * 2**20
    card = (embedded_model_dir() / "README.md").read_text()
    assert "| `+` |" in card and "| `/` |" in card and "meets bar" in card
    assert not list(MODELS_DIR.rglob("*.bin")) and not list(MODELS_DIR.rglob("*.pt"))
