"""Neuron anatomy: planted maps get their shape and numbers, the helix fit recovers planted coefficients, TWERA on a
hand-built two-layer model equals a hand computation, patch-the-fit with exact fits is the clean model; the CLI
(cached rerun) and the page on the embedded model."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from neurolab.analysis.sweep import NeuronSelection, grid_for, run_sweep
from neurolab.anatomy.helix import fit_helix, fitted_activations
from neurolab.anatomy.layer import anatomy_table, shape_table
from neurolab.anatomy.shape import Operands, additive_decomposition
from neurolab.anatomy.spectrum import average_ranks
from neurolab.anatomy.wiring import connections, twera, virtual_weights
from neurolab.capture.interventions import GridPatch, GridRef, Intervention
from neurolab.capture.trace import pre_activations, run
from neurolab.cli import anatomy as anatomy_cli
from neurolab.cli import options
from neurolab.models.loading import load_model
from neurolab.store import Store
from neurolab.tasks.grid import OperandGrid, PromptTemplate
from neurolab.tasks.vocab import build_tokenizer
from neurolab.viz import anatomy as figures

ROOT = Path(__file__).resolve().parent.parent


def plus_grid(max_op: int = 100) -> Operands:
    a, b = np.divmod(np.arange(max_op * max_op), max_op)
    return Operands(a, b, a + b)


def planted() -> tuple[Operands, dict[str, np.ndarray]]:
    ops = plus_grid()
    a, b, r = ops.a, ops.b, ops.r
    return ops, {
        "sum": np.exp(-((r - 120) / 8.0) ** 2),  # a pure function of a+b, not additive
        "ones lookup": ((a % 10 == 6) & (b % 10 == 9)).astype(float),  # `_6 + _9`
        "operand range": ((a >= 50) & (a < 60)).astype(float),
        "mod 10": np.cos(2 * np.pi * r / 10),  # separates residues
        "mod 10 ramp": np.cos(2 * np.pi * r / 10) * (r / 198),  # the same spectral peak, residues overlap
        "constant": np.full(len(ops), 0.25),
    }


def test_planted_maps_get_their_shape_and_numbers():
    ops, maps = planted()
    table = anatomy_table(np.stack(list(maps.values())).astype(np.float32), np.zeros((len(maps), len(ops))), None,
                          ops, 100)
    table.index = list(maps)
    assert dict(table["shape"]) == {"sum": "sum", "ones lookup": "lookup-table", "operand range": "operand-1",
                                    "mod 10": "result-modular", "mod 10 ramp": "sum", "constant": "constant"}
    sum_unit, lookup, operand, mod, ramp = (table.loc[n] for n in list(maps)[:5])
    assert sum_unit["adj[r]"] > 0.999 and sum_unit["interaction"] > 0.8
    assert lookup["adj[ones lookup]"] > 0.999 and lookup["adj[r]"] < 0.2 and lookup["lookup_key"] == "ones"
    assert operand["r2[a]"] > 0.999 and operand["r2_additive"] > 0.999 and operand["r2[b]"] < 1e-6
    assert mod["modulus"] == 10 and mod["mod_auroc"] > 0.999 and mod["adj[r mod 10]"] > 0.999
    assert mod["diagonal[10]"] > 0.999 and mod["pair1"] == "(10,10)" and mod["share[r,10]"] > 0.999
    # "Fourier sparsity is necessary but not sufficient": the ramp's spectrum peaks at period 10 on the diagonal,
    # and its map is a function of r, but residues of 10 do not separate, so it is no mod-10 unit
    assert ramp["pair1"] == "(10,10)" and ramp["share[r,10]"] > 0.5
    assert ramp["auroc[r,10]"] < 0.95 and ramp["modulus"] == 0
    # the active share: the range unit fires on a tenth of the prompts
    assert operand["active_share"] == pytest.approx(0.1)


def test_additive_fit_is_exact_on_an_incomplete_grid():
    grid = OperandGrid("-", 100, 999, PromptTemplate())
    pairs = np.asarray(grid.pairs)
    ops = Operands(pairs[:, 0], pairs[:, 1], np.asarray(grid.answers))
    additive = np.sin(ops.a / 7.0) + 0.3 * (ops.b % 4)
    interaction = np.cos(np.pi * (ops.a + ops.b))  # parity of a + b: a XOR of the operands, no main effect
    table = shape_table(np.stack([additive, interaction]).astype(np.float32), ops)
    assert table.loc[0, "r2_additive"] > 0.9999 and table.loc[0, "shape"] in ("additive", "operand-1")
    assert table.loc[1, "r2_additive"] < 0.05
    mu, row, col, rest = additive_decomposition(additive, ops)
    assert np.abs(rest).max() < 1e-8  # the decomposition reproduces the map
    assert np.allclose(mu + row[ops.a] + col[ops.b], additive)


def test_additive_decomposition_of_a_complete_grid_equals_least_squares():
    """A complete grid takes the row and column means; they are the least-squares main effects."""
    ops = plus_grid()
    values = np.random.default_rng(0).normal(size=len(ops.a)) + np.sin(ops.a / 9.0) * np.cos(ops.b / 5.0)
    mu, row, col, rest = additive_decomposition(values, ops)
    design = np.zeros((len(values), 2 * 100))
    design[np.arange(len(values)), ops.a] = 1
    design[np.arange(len(values)), 100 + ops.b] = 1
    beta, *_ = np.linalg.lstsq(design, values - values.mean(), rcond=None)
    fitted = values.mean() + design @ beta
    assert np.abs(rest).max() > 0.5  # not additive: the check below is not trivial
    assert np.allclose(mu + row[ops.a] + col[ops.b], fitted) and np.allclose(rest, values - fitted)
    assert abs(row[ops.a].mean()) < 1e-12 and abs(col[ops.b].mean()) < 1e-12


def test_average_ranks_share_ties():
    values = np.array([[3, 1, 3, 2, 3, 1], [0.5, 0.5, 0.5, 0.5, 0.5, 2]], np.float32)
    expected = np.stack([pd.Series(row).rank(method="average").to_numpy() for row in values])
    assert np.array_equal(average_ranks(values), expected)


def test_helix_fit_recovers_planted_coefficients():
    ops = plus_grid()
    a, r = ops.a, ops.r
    pre = 2 + 0.02 * a + 3 * np.cos(2 * np.pi * (r - 3) / 10) - 1.5 * np.cos(2 * np.pi * (a - 7) / 100) \
        + 0.8 * np.cos(np.pi * ops.b)
    noisy = pre + np.random.default_rng(0).normal(0, 0.1, len(ops))
    table, fitted = fit_helix(np.stack([pre, noisy]), ops)
    exact = table.iloc[0]
    assert exact["nrmse"] < 1e-9 and np.allclose(fitted[0], pre)
    assert exact["amp[r,10]"] == pytest.approx(3) and exact["phase[r,10]"] == pytest.approx(3)
    assert exact["amp[a,100]"] == pytest.approx(1.5) and exact["phase[a,100]"] == pytest.approx(57)  # -cos: d+50
    assert exact["amp[b,2]"] == pytest.approx(0.8) and exact["lin[a]"] == pytest.approx(0.02)
    assert exact["dominant"] == "r T=10" and exact["result_fraction"] == pytest.approx(3 / (3 + 1.5 + 0.8))
    noisy_row = table.iloc[1]
    assert 0.01 < noisy_row["nrmse"] < 0.1 and abs(noisy_row["amp[r,10]"] - 3) < 0.02


def _two_layer_model(folder: Path) -> Path:
    """A 2-layer GPT-NeoX with 4 neurons per layer and seeded weights, built here (sequential residual: with the
    parallel one, layer 0's MLP reads only the residual entering the block, the "=" token alone at the last
    position, and is constant over a grid)."""
    tokenizer = build_tokenizer()
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=4, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           use_parallel_residual=False)
    torch.manual_seed(3)
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.5 if "layernorm" in name and name.endswith("weight") else 0, 0.5)
        model.gpt_neox.layers[1].mlp.dense_h_to_4h.bias += 1.0  # layer 1's neurons fire: E[a_j] > 0, TWERA defined
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_twera_on_a_hand_built_two_layer_model_equals_a_hand_computation(tmp_path):
    model = load_model(str(_two_layer_model(tmp_path / "two-layer")))
    store = Store(tmp_path / "store.duckdb")
    sweep = run_sweep(model, store, "+", NeuronSelection("all"), max_op=12)
    k0, _ = store.layer_maps(sweep.sweep_id, 0, [0, 1, 2, 3])
    k1, _ = store.layer_maps(sweep.sweep_id, 1, [0, 1, 2, 3])
    weights = {name: p.detach().double().numpy() for name, p in model.hf.named_parameters()}
    w_out = weights["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"]  # [d_model, d_mlp]
    w_in = weights["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"]  # [d_mlp, d_model]
    gamma = weights["gpt_neox.layers.1.post_attention_layernorm.weight"]
    by_hand_v = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            by_hand_v[i, j] = sum(gamma[d] * w_in[j, d] * w_out[d, i] for d in range(8))
    assert np.allclose(virtual_weights(model, 0, 1), by_hand_v, atol=1e-5)
    got = twera(by_hand_v, k0, k1, min_active=1)
    n = k0.shape[1]
    for i in range(4):
        for j in range(4):
            joint = sum(float(k0[i, p]) * float(k1[j, p]) for p in range(n)) / n
            mean_j = sum(float(k1[j, p]) for p in range(n)) / n
            fires = (k0[i] > 0.1 * k0[i].max()).sum() >= 1 and k0[i].max() > 0 and k1[j].max() > 0 and mean_j > 0
            if fires:
                assert got[i, j] == pytest.approx(by_hand_v[i, j] * joint / mean_j, rel=1e-5)
            else:
                assert math.isnan(got[i, j])
    assert np.isfinite(got).sum() >= 4  # the check compared real numbers
    links = connections(model, {0: ([0, 1, 2, 3], k0), 1: ([0, 1, 2, 3], k1)}, 1, 2, count=2, min_active=1)
    assert set(links["direction"]) <= {"input"} and len(links) <= 2
    if len(links):
        best = links.iloc[0]
        assert best["twera"] == pytest.approx(got[int(best["neuron"]), 2], rel=1e-5)
        assert abs(best["twera"]) == pytest.approx(np.nanmax(np.abs(got[:, 2])), rel=1e-5)


@pytest.mark.parametrize("layer", [2, 3])  # layer 3: the last layer's shortcut applies the patch too
def test_patch_the_fit_with_exact_fits_is_the_clean_model(embedded, tmp_path, layer):
    grid = grid_for(embedded, "+", 30)
    neurons = [5, 40, 300]
    clean = run(embedded, grid.prompts, layers={layer: neurons}, logits=True)
    ref = GridRef("+", 30)
    exact = Intervention((GridPatch(tuple((layer, n) for n in neurons), ref, clean.neurons[layer], "exact"),))
    patched = run(embedded, grid.prompts, logits=True, intervention=exact)
    assert torch.allclose(patched.logits, clean.logits, atol=1e-4)
    zero = Intervention((GridPatch(tuple((layer, n) for n in neurons), ref, torch.zeros(len(grid), 3)),))
    moved = run(embedded, grid.prompts, logits=True, intervention=zero)
    assert (moved.logits - clean.logits).abs().max() > 1e-2  # the patch does something when the values differ
    outside = run(embedded, ["3+4=", "63+40="], logits=True, intervention=zero)  # 63+40 is not on the 30-grid
    alone = run(embedded, ["3+4=", "63+40="], logits=True)
    assert (outside.logits[0] - alone.logits[0]).abs().max() > 1e-3
    assert torch.allclose(outside.logits[1], alone.logits[1], atol=1e-5)
    store = Store(tmp_path / "store.duckdb")  # saved and reloaded, it is the same intervention
    store.save_intervention(exact.to_json(), exact.tensors())
    again = Intervention.from_json(*store.load_intervention(exact.key))
    assert again == exact and again.key == exact.key


def test_pre_activations_are_the_up_projection_output(embedded):
    prompts = ["12+30=", "7+7="]
    captured = pre_activations(embedded, prompts, {1: [3, 9]})[1]["pre"]
    seen = {}
    module = embedded.hf.gpt_neox.layers[1].mlp.dense_h_to_4h
    hook = module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o[:, -1, [3, 9]].detach()))
    try:
        with torch.no_grad():
            embedded.hf(**embedded.encode(prompts))
    finally:
        hook.remove()
    assert torch.allclose(captured, seen["out"], atol=1e-6)


def test_activation_of_the_pre_activations_is_the_neuron_on_every_family(tiny_model):
    """Patch-the-fit's last step, act(pre) (gated: act(gate) * up), rebuilds the neurons from their real
    pre-activations, on every family: with an exact fit, the patch is the clean model."""
    prompts = grid_for(tiny_model, "+", 8).prompts
    layer, neurons = tiny_model.n_layers - 1, [0, 5, 17]
    pre = {name: values.numpy().T for name, values in pre_activations(tiny_model, prompts, {layer: neurons})[layer]
           .items()}
    assert set(pre) == ({"gate", "up"} if tiny_model.gated else {"pre"})
    rebuilt = fitted_activations(tiny_model, layer, pre)
    neurons_seen = run(tiny_model, prompts, layers={layer: neurons}).neurons[layer].numpy().T
    assert np.allclose(rebuilt, neurons_seen, atol=1e-5)
    if tiny_model.gated:  # the page's map of gate x up sign combinations
        pairs = np.asarray(grid_for(tiny_model, "+", 8).pairs)
        frame = pd.concat([pd.DataFrame({"op1": pairs[:, 0], "op2": pairs[:, 1], "answer": pairs.sum(1),
                                         "point": point, "pre": pre[point][0]}) for point in ("gate", "up")])
        codes = np.asarray(figures.sign_map_figure(frame, 8).data[0].z)
        expected = 2 * (pre["gate"][0] < 0) + (pre["up"][0] < 0)
        assert np.array_equal(codes[pairs[:, 0], pairs[:, 1]], expected)


def cli(*argv: str) -> int:
    """The ``anatomy`` command as ``python -m neurolab`` will build it (commands.py's parents)."""
    parser = argparse.ArgumentParser(prog="python -m neurolab")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = {"model": options.model_options(), "store": options.store_options(), "grid": options.grid_options(),
               "importance": options.importance_options(), "intervention": options.intervention_options(),
               "quiet": options.quiet_option()}
    anatomy_cli.add_parsers(sub, parents)
    args = parser.parse_args(["anatomy", *argv])
    return args.run(args)


def test_cli_on_an_incomplete_grid_then_a_cached_rerun(embedded, tmp_path, capsys):
    store_path = tmp_path / "cli.duckdb"
    out = tmp_path / "anatomy.csv"
    argv = ("--op", "-", "--max-op", "40", "--layers", "3", "--fit", "--wiring", "--top-n", "5", "--quiet",
            "--store", str(store_path), "--out", str(out))
    assert cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "label counts per layer" in printed and "NRMSE best" in printed and "strongest links by TWERA" in printed
    table = pd.read_csv(out)
    assert len(table) == embedded.d_mlp and set(table["layer"]) == {3}
    assert "nrmse_pre" in table and table["nrmse_pre"].between(0, 1).all()
    assert "pair1" not in table  # the - grid is incomplete: no 2-D DFT, line spectra instead
    assert table["auroc[r,10]"].between(0.5, 1).all()
    patched = Store(store_path).analyses("anatomy-patch-fit")
    assert len(patched) == 1
    before = len(Store(store_path).analyses())
    assert cli(*argv) == 0  # everything cached: nothing computed, nothing stored again
    assert len(Store(store_path).analyses()) == before
    assert pd.read_csv(out).equals(table)


def chart_titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]


@pytest.mark.usefixtures("pages_store")
def test_page_sweeps_then_shows_the_neuron_and_the_layer(embedded):
    at = AppTest.from_file(str(ROOT / "pages" / "8_Anatomy.py"), default_timeout=300)
    at.session_state["max_op"] = 30
    at.run()
    assert not at.exception, at.exception
    assert "No sweep" in at.info[0].value
    at.button(key="anatomy_run").click().run()
    assert not at.exception, at.exception
    titles = chart_titles(at)
    assert any("row(op1) + col(op2)" in t for t in titles) and any("Shapes per layer" in t for t in titles)
    assert any("**Shape**" in m.value for m in at.markdown)
    at.session_state["anatomy_view"] = "Helix fit"  # what clicking the tab sets
    at.run()
    at.toggle(key="anatomy_fit_neuron").set_value(True).run()
    assert not at.exception, at.exception
    titles = chart_titles(at)
    assert any("helix fit of the pre-activation" in t for t in titles)
    assert not any("row(op1) + col(op2)" in t for t in titles)  # one view of the neuron drawn at a time
    at.number_input(key="anatomy_top_n").set_value(5)
    at.toggle(key="anatomy_fit_layer").set_value(True).run()
    assert not at.exception, at.exception
    patch = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
             if "Patch the fit" in json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")]
    assert len(patch) == 1 and [bar["name"] for bar in patch[0]["data"]] == ["clean", "patched to fit", "mean-ablated"]
    at.session_state["anatomy_view"] = "Inputs and outputs"
    at.run()
    opens = [b for b in at.button if b.key and b.key.startswith("anatomy_open_")]
    assert opens  # a linked neuron opens on click
    target = opens[0].key.removeprefix("anatomy_open_")
    opens[0].click().run()
    assert not at.exception and at.session_state["neuron"] == target
