"""Circuit localisation: component activation patching, counterfactual rules, cache, heatmap and CLI."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
import torch

from neurolab.analysis.circuit import RULES, circuit_effects, counterfactual_pairs
from neurolab.analysis.sweep import grid_for
from neurolab.capture.patching import head_width, n_heads, patch_components
from neurolab.cli import circuit as circuit_cli
from neurolab.cli import options
from neurolab.errors import InputError
from neurolab.models.adapters import get_module
from neurolab.store import Store
from neurolab.viz.circuit import circuit_heatmap

MAX_OP = 30


@pytest.fixture(scope="module")
def pairs(embedded):
    return counterfactual_pairs(embedded, grid_for(embedded, "+", MAX_OP), "both", n=8, seed=0)


def test_corrupt_equal_to_clean_has_no_effect(embedded, pairs):
    frame = patch_components(embedded, pairs.clean, pairs.clean, pairs.clean_answer, pairs.corrupt_answer)
    assert len(frame) == embedded.n_layers * (1 + n_heads(embedded)) * 4
    assert frame["logit_diff"].abs().max() < 1e-5
    assert frame["ie"].abs().max() < 1e-5


def test_last_layer_mlp_matters_at_the_last_position_only(embedded, pairs):
    frame = patch_components(embedded, pairs.clean, pairs.corrupt, pairs.clean_answer, pairs.corrupt_answer)
    last_mlp = frame[(frame["component"] == f"L{embedded.n_layers - 1} MLP")].set_index("position")["fraction"]
    assert last_mlp[3] > 0.3  # the last MLP at "=" carries much of the answer
    assert abs(last_mlp[0]) < 0.05 * last_mlp[3]  # at op1 it can only act through later positions: none left


def _manual(model, clean, corrupt, answers, layer, head, position):
    """One patch with plain PyTorch hooks on the HF module (no nnsight), one prompt pair at a time."""
    hf, adapter = model.hf, model.adapter
    d_head = head_width(model)
    module = get_module(hf, adapter.mlp_path(layer) if head is None else adapter.attn_out_path(layer))
    saved = {}

    def grab(_, args, output=None):
        saved["value"] = (output if head is None else args[0]).detach().clone()

    def put(_, args, output=None):
        target = output if head is None else args[0]
        if head is None:
            target[:, position] = saved["value"][:, position]
        else:
            cols = slice(head * d_head, (head + 1) * d_head)
            target[:, position, cols] = saved["value"][:, position, cols]

    drops, swing = [], []
    for c, x, (r, r2) in zip(clean, corrupt, answers.tolist()):
        enc = model.encode([x])
        hook = (module.register_forward_hook(grab) if head is None else module.register_forward_pre_hook(grab))
        with torch.no_grad():
            corrupt_logits = hf(**enc).logits[0, -1]
        hook.remove()
        enc = model.encode([c])
        with torch.no_grad():
            clean_logits = hf(**enc).logits[0, -1]
        hook = (module.register_forward_hook(put) if head is None else module.register_forward_pre_hook(put))
        with torch.no_grad():
            patched = hf(**enc).logits[0, -1]
        hook.remove()

        def ld(logits, r=r, r2=r2):
            return float(logits[r] - logits[r2])
        drops.append(ld(clean_logits) - ld(patched))
        swing.append(ld(clean_logits) - ld(corrupt_logits))
    return float(np.mean(drops)), float(np.mean(drops) / np.mean(swing))


def test_batched_patching_equals_a_manual_single_patch(embedded, pairs):
    frame = patch_components(embedded, pairs.clean, pairs.corrupt, pairs.clean_answer, pairs.corrupt_answer,
                             batch_size=40)  # several passes, several patches per pass
    answers = torch.stack([pairs.clean_answer, pairs.corrupt_answer], 1)
    for layer, head, position in ((2, None, 3), (1, 2, 3), (0, 0, 2)):
        drop, fraction = _manual(embedded, pairs.clean, pairs.corrupt, answers, layer, head, position)
        label = f"L{layer} MLP" if head is None else f"L{layer}H{head}"
        row = frame[(frame["component"] == label) & (frame["position"] == position)].iloc[0]
        assert row["logit_diff"] == pytest.approx(drop, abs=1e-4)
        assert row["fraction"] == pytest.approx(fraction, abs=1e-5)


def test_patching_under_an_ablation(embedded, pairs):
    from neurolab.capture.interventions import Intervention, NeuronAblation

    ablation = Intervention((NeuronAblation(tuple((3, n) for n in range(64))),))
    args = (pairs.clean, pairs.corrupt, pairs.clean_answer, pairs.corrupt_answer)
    clean = patch_components(embedded, *args, layers=[3], positions=[-1])
    ablated = patch_components(embedded, *args, ablation, layers=[3], positions=[-1])
    assert not np.allclose(clean["logit_diff"], ablated["logit_diff"])
    same = patch_components(embedded, pairs.clean, pairs.clean, *args[2:], ablation, layers=[3], positions=[-1])
    assert same["logit_diff"].abs().max() < 1e-5


def test_every_family_patches(tiny_model):
    ids = tiny_model.number_token_ids
    clean, corrupt = ["3+4=", "5+6="], ["3+9=", "2+6="]
    frame = patch_components(tiny_model, clean, corrupt, [ids[7], ids[11]], [ids[12], ids[8]], positions=[-1, -2])
    heads = n_heads(tiny_model)
    assert len(frame) == tiny_model.n_layers * (1 + heads) * 2
    assert set(frame["position"]) == {2, 3}
    assert frame["logit_diff"].notna().all() and (frame["logit_diff"].abs() > 0).any()
    same = patch_components(tiny_model, clean, clean, [ids[7], ids[11]], [ids[12], ids[8]], layers=[0])
    assert same["logit_diff"].abs().max() < 1e-4


def test_unaligned_prompts_are_refused(embedded):
    ids = embedded.number_token_ids
    with pytest.raises(InputError, match="same number of tokens"):
        patch_components(embedded, ["3+4="], ["3+4= 1"], [ids[7]], [ids[8]])


@pytest.mark.parametrize("rule", RULES)
def test_counterfactual_rules(embedded, rule):
    grid = grid_for(embedded, "+", MAX_OP)
    chosen = counterfactual_pairs(embedded, grid, rule, n=6, seed=1)
    assert len(chosen.clean) == 6
    for c, x in zip(chosen.clean, chosen.corrupt):
        (a, b), (a2, b2) = (tuple(map(int, p.rstrip("=").split("+"))) for p in (c, x))
        assert a + b != a2 + b2
        if rule == "op1":
            assert b == b2 and a != a2
        if rule == "op2":
            assert a == a2 and b != b2
    again = counterfactual_pairs(embedded, grid, rule, n=6, seed=1)
    assert (again.clean, again.corrupt) == (chosen.clean, chosen.corrupt)  # seeded


def test_cache_heatmap_and_cli(embedded, tmp_path, capsys):
    store = Store(tmp_path / "cache.duckdb")
    first = circuit_effects(embedded, store, "+", MAX_OP, rule="op2", n=6, layers=[2, 3])
    assert set(first["layer"]) == {2, 3}
    again = circuit_effects(embedded, store, "+", MAX_OP, rule="op2", n=6, layers=[2, 3], metric="logit_diff")
    assert len(store.analyses("circuit")) == 1  # served from the store
    assert np.allclose(again["fraction"], first["fraction"]) and np.allclose(again["effect"], again["logit_diff"])

    fig = circuit_heatmap(first, metric="fraction")
    assert fig.data[0].y[0] == "L2 MLP" and fig.data[0].y[1] == "L2H0"
    assert list(fig.data[0].x) == ["0: " + first["token"].iloc[0], *fig.data[0].x[1:]] and len(fig.data[0].x) == 4
    assert "prompt pairs" in fig.layout.title.text

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    circuit_cli.add_parsers(sub, {"model": options.model_options(), "store": options.store_options(),
                                  "grid": options.grid_options(), "intervention": options.intervention_options(),
                                  "quiet": options.quiet_option()})
    out = tmp_path / "effects.csv"
    args = parser.parse_args(["circuit", "--op", "+", "--max-op", str(MAX_OP), "--rule", "op2", "--pairs", "6",
                              "--layers", "2,3", "--store", str(tmp_path / "cache.duckdb"), "--quiet", "--top", "3",
                              "--out", str(out)])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "top 3" in printed and len(re.findall(r"L\d+(?: MLP|H\d+) at \d+", printed)) == 3
    assert out.exists() and len(store.analyses("circuit")) == 1  # the CLI reused the cached result
