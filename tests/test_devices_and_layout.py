"""Device and dtype handling as far as a CPU allows, the CLI's error boundary, and a layout whose imports point down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from neurolab.analysis.sweep import NeuronSelection, run_sweep
from neurolab.capture.trace import run
from neurolab.cli import commands
from neurolab.errors import InputError
from neurolab.models.devices import HostStage, resolve_device, resolve_dtype
from neurolab.models.loading import load_model
from neurolab.store import Store

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["23+45=", "7*8=", "99-3="]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_loads_straight_into_its_dtype_and_runs(embedded, dtype, tmp_path):
    half = load_model("embedded", device="cpu", dtype=dtype)
    assert {p.dtype for p in half.hf.parameters()} == {getattr(torch, dtype)}
    assert half.fingerprint != embedded.fingerprint and half.dtype == dtype
    full, low = run(embedded, PROMPTS, [3]), run(half, PROMPTS, [3])
    assert low.neurons[3].dtype == torch.float32  # captured values reach the host as float32
    assert (full.neurons[3] - low.neurons[3]).abs().max() < 0.1
    assert list(full.top1) == list(low.top1)
    lens = half.number_logit_lens(3)
    assert lens.device.type == "cpu" and lens.dtype == torch.float32  # lens and captured values meet on the host
    store = Store(tmp_path / "s.duckdb")
    result = run_sweep(half, store, "+", NeuronSelection("list", neurons=((3, 1), (3, 2))), 10)
    k, kv = store.neuron_map(result.sweep_id, 3, 1)
    assert len(k) == 100 and torch.isfinite(torch.as_tensor(kv)).all()
    store.close()


def test_device_and_dtype_resolution():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            load_model("embedded", device="cuda")


def test_host_stage_reuses_one_buffer_per_name():
    stage = HostStage()
    values = torch.arange(6.0).reshape(2, 3)
    assert (stage.copy("a", values) == values.numpy()).all()  # on the CPU: no copy at all


def test_a_device_map_loads_through_accelerate(tiny_model_dirs):
    folder = str(tiny_model_dirs["llama"])
    plain = load_model(folder)
    mapped = load_model(folder, device_map={"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu",
                                            "model.rotary_emb": "cpu", "lm_head": "cpu"})
    assert mapped is not plain  # loaded anew, through accelerate's placement (one device here: no hooks needed)
    a, b = run(plain, PROMPTS, None, logits=True), run(mapped, PROMPTS, None, logits=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)


def test_the_cli_catches_only_neurolabs_errors(monkeypatch, capsys):
    def user_error(args):
        raise InputError("a clear message")

    def bug(args):
        raise ValueError("a real bug")

    monkeypatch.setattr(commands, "_info", user_error)
    assert commands.main(["info"]) == 2 and "error: a clear message" in capsys.readouterr().err
    monkeypatch.setattr(commands, "_info", bug)
    with pytest.raises(ValueError, match="a real bug"):  # a bug keeps its traceback
        commands.main(["info"])


#: modules at the bottom that every room may import: errors, the one hash for keys, the one progress protocol (and
#: the package's version, ``from .. import __version__``)
BOTTOM = {"errors", "keys", "progress", "__version__"}
#: each room and the rooms it may import (imports point down the layers)
ALLOWED = {
    "models": {"errors", "paths"},
    "tasks": {"errors"},
    "heuristics": {"errors", "tasks"},
    "store": {"errors", "models"},
    "capture": {"errors", "models", "tasks"},
    "analysis": {"errors", "models", "tasks", "capture", "store", "heuristics"},
    "train": {"errors", "paths", "models", "tasks", "analysis"},
    "anatomy": {"errors", "models", "tasks", "capture", "store", "heuristics", "analysis"},
    "viz": {"analysis", "anatomy", "models", "tasks"},
    "export": {"errors", "models", "tasks", "capture", "store", "heuristics", "analysis", "anatomy", "viz"},
    "cli": {"errors", "paths", "models", "tasks", "capture", "store", "analysis", "anatomy", "train", "export"},
}


def _rooms_imported(path: Path) -> set[str]:
    """The rooms (``neurolab.<room>``, or a bottom module or name) a file imports, relative imports resolved against
    the file's own package at any depth (``from ...analysis import x`` in ``neurolab/export/kinds/``)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])  # ["neurolab", "export", ...]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level >= 1:
            base = package[:len(package) - node.level + 1]
            parts = [*base, *(node.module or "").split(".")] if node.module else base
            parts = [part for part in parts if part]
            if len(parts) >= 2:
                found.add(parts[1])
            else:  # ``from .. import x`` at the package's top: x is the module or name
                found.update(alias.name for alias in node.names)
        elif (node.module or "").startswith("neurolab."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_point_down_a_layer(room):
    for path in (ROOT / "neurolab" / room).rglob("*.py"):
        extra = _rooms_imported(path) - ALLOWED[room] - BOTTOM - {room}
        assert not extra, f"{path.relative_to(ROOT)} imports {extra}"


def test_sql_lives_only_in_the_store():
    sql = re.compile(r"\bSELECT\b.*\bFROM\b|\b(INSERT INTO|CREATE TABLE|DELETE FROM)\b")  # statements, not a help text
    for path in (ROOT / "neurolab").rglob("*.py"):
        if path.parent.name != "store":
            assert not sql.search(path.read_text()), path


def test_the_wrapper_is_told_where_the_model_is_and_revisions_need_a_hub_id(embedded):
    pipeline = embedded.lm.pipeline
    assert pipeline is None or pipeline.device == embedded.device  # nnsight's pipeline never moves the model
    from neurolab.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="applies to hub ids"):
        load_model("embedded", revision="step1000")
