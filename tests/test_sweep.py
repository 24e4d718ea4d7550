"""Operand-grid sweeps into a real DuckDB file: correct values, resumable, keyed apart, exportable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from neurolab.analysis.neuron_maps import load_neuron_map, most_active
from neurolab.analysis.sweep import NeuronSelection, find_sweep, grid_for, run_sweep
from neurolab.capture.interventions import ablation
from neurolab.capture.trace import run
from neurolab.models.loading import load_model
from neurolab.paths import embedded_model_dir
from neurolab.store import Store, StoreError
from neurolab.tasks.grid import TEMPLATES, OperandGrid, PromptTemplate, parse_template

MAX_OP = 30


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "cache.duckdb")
    yield s
    s.close()


def test_sweep_equals_direct_per_prompt_computation(embedded, store):
    result = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(2, 3)), max_op=MAX_OP, chunk_size=200)
    grid = grid_for(embedded, "+", MAX_OP)
    assert result.n_prompts == len(grid) == MAX_OP * MAX_OP and result.chunks_total == 5
    prompts = store.prompts(result.sweep_id)
    assert list(prompts["idx"]) == list(range(len(grid)))
    rng = np.random.default_rng(0)
    sample = rng.choice(len(grid), 12, replace=False)
    maps = {(layer, n): store.neuron_map(result.sweep_id, layer, n) for layer in (2, 3) for n in (0, 7, 311)}
    for i in sample:
        alone = run(embedded, [grid.prompts[i]], [2, 3], logits=True)  # one prompt, one trace, unbatched
        a = grid.answers[i]
        answer_id = embedded.number_token_ids[a]
        probs = alone.logits[0].softmax(-1)
        row = prompts.iloc[i]
        assert (row.op1, row.op2, row.answer) == (*grid.pairs[i], a)
        assert row.correct == (int(probs.argmax()) == answer_id)
        assert abs(row.answer_prob - float(probs[answer_id])) < 1e-4
        for (layer, n), (k, kv) in maps.items():
            direct_k = float(alone.neurons[layer][0, n])
            direct_kv = direct_k * float(embedded.number_logit_lens(layer)[n, a])
            assert abs(k[i] - direct_k) < 2e-3 * max(1.0, abs(direct_k))  # stored as float16
            assert abs(kv[i] - direct_kv) < 2e-3 * max(1.0, abs(direct_kv))


def test_rerun_is_a_noop_and_new_layers_add_only_themselves(embedded, store):
    first = run_sweep(embedded, store, "-", NeuronSelection("all", layers=(3,)), max_op=MAX_OP)
    assert not first.cached
    assert run_sweep(embedded, store, "-", NeuronSelection("all", layers=(3,)), max_op=MAX_OP).cached
    more = run_sweep(embedded, store, "-", NeuronSelection("all", layers=(2, 3)), max_op=MAX_OP)
    assert more.chunks_computed == more.chunks_total and more.sweep_id == first.sweep_id
    assert store.sweep_info(first.sweep_id)["stored"] == {2: embedded.d_mlp, 3: embedded.d_mlp}
    assert len(store.blocks(first.sweep_id)) == 2  # layer 3 was not written twice


class Killed(Exception):
    pass


def test_interrupted_sweep_resumes_without_duplicates_or_gaps(embedded, tmp_path):
    whole = Store(tmp_path / "whole.duckdb")
    reference = run_sweep(embedded, whole, "*", NeuronSelection("all", layers=(1, 3)), max_op=MAX_OP, chunk_size=64)
    killed = Store(tmp_path / "killed.duckdb")
    calls = []

    def die_after_two_chunks(done: int, total: int, stage: str) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise Killed

    with pytest.raises(Killed):
        run_sweep(embedded, killed, "*", NeuronSelection("all", layers=(1, 3)), max_op=MAX_OP, chunk_size=64,
                  progress=die_after_two_chunks)
    sweep_id = find_sweep(embedded, killed, grid_for(embedded, "*", MAX_OP))
    assert killed.blocks(sweep_id)["done"].tolist() == [2, 2]  # two chunks x two layers committed
    resumed = run_sweep(embedded, killed, "*", NeuronSelection("all", layers=(1, 3)), max_op=MAX_OP, chunk_size=64)
    assert resumed.chunks_computed == reference.chunks_total - 2
    assert len(killed.blocks(sweep_id)) == 2 and killed.blocks(sweep_id)["complete"].all()  # resumed, not redone
    for layer in (1, 3):
        a = whole.layer_maps(reference.sweep_id, layer, list(range(512)))
        b = killed.layer_maps(resumed.sweep_id, layer, list(range(512)))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    pd.testing.assert_frame_equal(whole.prompts(reference.sweep_id), killed.prompts(resumed.sweep_id))
    whole.close()
    killed.close()


def test_models_and_templates_never_mix(embedded, store):
    checkpoint = load_model(str(embedded_model_dir() / "checkpoints" / "step-00500"))
    assert checkpoint.fingerprint != embedded.fingerprint
    a = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(3,)), max_op=20)
    b = run_sweep(checkpoint, store, "+", NeuronSelection("all", layers=(3,)), max_op=20)
    c = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(3,)), max_op=20, template=TEMPLATES["spaced"])
    assert len({a.sweep_id, b.sweep_id, c.sweep_id}) == 3
    ka, kb = store.neuron_map(a.sweep_id, 3, 0)[0], store.neuron_map(b.sweep_id, 3, 0)[0]
    assert not np.allclose(ka, kb)
    assert store.prompts(c.sweep_id)["prompt"].iloc[5] == "0 + 5 ="
    sweeps = store.sweeps()
    assert set(sweeps["fingerprint"]) == {embedded.fingerprint, checkpoint.fingerprint}
    assert set(sweeps["template"]) == {"{op1}{op}{op2}=", "{op1} {op} {op2} ="}


def test_templates():
    assert parse_template("fewshot").fewshot == 3
    custom = parse_template("Q: {op1} {op} {op2} =")
    assert custom.render(1, "+", 2) == "Q: 1 + 2 ="
    with pytest.raises(ValueError, match="lacks"):
        PromptTemplate("{op1} + =")
    with pytest.raises(ValueError, match="field other than"):
        PromptTemplate("{op1}{op}{op2}={x}")
    grid = OperandGrid(op="-", max_op=10, max_single_token=999, template=PromptTemplate(fewshot=2))
    assert all(p.startswith(grid.prompts[0].split(" ")[0]) for p in grid.prompts)  # same examples everywhere
    assert grid.prompts[0].count("=") == 3


def test_neuron_map_views_and_exports(embedded, store, tmp_path):
    result = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(3,)), max_op=20)
    top = most_active(store, result.sweep_id, 3, count=5)
    assert list(top["std_k"]) == sorted(top["std_k"], reverse=True)
    nmap = load_neuron_map(store, result.sweep_id, 3, int(top["neuron"][0]), "KV")
    matrix = nmap.matrix(20)
    assert matrix.shape == (20, 20) and np.isfinite(matrix).all()  # + grid is full for max_op 20
    assert nmap.folded(7).shape == (7, 7)
    assert list(nmap.by_result()["answer"]) == list(range(39))
    out = store.export("SELECT * FROM activations WHERE layer = 3 AND neuron = 0", tmp_path / "n.parquet")
    frame = pd.read_parquet(out)
    assert len(frame) == 400 and {"op1", "op2", "k", "kv", "fingerprint"} <= set(frame.columns)
    assert np.allclose(frame.sort_values("idx")["k"], store.neuron_map(result.sweep_id, 3, 0)[0])
    csv = store.export("prompts", tmp_path / "p.csv")
    assert len(pd.read_csv(csv)) == 400
    with pytest.raises(StoreError, match="parquet or .csv"):
        store.export("prompts", tmp_path / "p.xlsx")


def test_corrupt_store_is_reported_and_left_untouched(tmp_path, embedded):
    path = tmp_path / "broken.duckdb"
    path.write_bytes(b"this is not a duckdb file" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="cannot be opened as a DuckDB database"):
        run_sweep(embedded, Store(path), "+", NeuronSelection("all", layers=(3,)), max_op=10)
    assert path.read_bytes() == before


def test_cli_sweep_fills_the_store_then_says_cached(tmp_path):
    store = tmp_path / "cli.duckdb"
    out = tmp_path / "maps.parquet"
    cmd = [sys.executable, "-m", "neurolab", "sweep", "--op", "/", "--layers", "3", "--max-op", "12",
           "--store", str(store), "--quiet"]
    first = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "computed" in first.stdout
    frame = pd.read_parquet(out)
    assert len(frame) == 12 * 11 * 512 and set(frame["layer"]) == {3}
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "already cached, nothing to compute" in second.stdout


def test_remote_path_runs_as_nnsights_local_dry_run(embedded):
    prompts = ["12+7=", "40-3="]
    here = run(embedded, prompts, [1, 3], logits=True)
    dry = run(embedded, prompts, [1, 3], remote="local", logits=True)
    assert torch.equal(here.logits, dry.logits)
    assert all(torch.equal(here.neurons[layer], dry.neurons[layer]) for layer in (1, 3))
    knocked = ablation(["L1N4", "L3N7"])  # interventions travel with the serialised trace too
    here, dry = (run(embedded, prompts, [3], logits=True, intervention=knocked, remote=r) for r in (False, "local"))
    assert torch.equal(here.logits, dry.logits) and torch.all(dry.neurons[3][:, 7] == 0)


@pytest.mark.parametrize("args, message", [
    (["--layers", "9"], "layer 9 does not exist"), (["--layers", "2,x"], "write layers like"),
    (["--template", "{op1}+"], "lacks {op}, {op2}"),
])
def test_cli_sweep_bad_input_is_one_clear_line(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "neurolab", "sweep", "--op", "+", "--quiet",
                             "--store", str(tmp_path / "s.duckdb"), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
