"""MathNeuro's math-specific weights against the heuristic neurons (issue 15, "Overlap with heuristic neurons")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurolab.analysis import mathneuro as mn
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.mathneuro_overlap import (
    ablation_vs_pruning,
    mlp_matrices,
    neuron_overlap,
    overlap_by_layer,
)
from neurolab.models.adapters import get_module
from neurolab.store import Store
from neurolab.tasks.samples import load_samples

K = 0.05


def _neuron_mask(model, name: str, axis: int, neurons: list[int]) -> torch.Tensor:
    weight = dict(model.hf.named_parameters())[name]
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    index = [slice(None)] * 2
    index[axis] = neurons
    mask[tuple(index)] = True
    return mask


def test_mlp_matrices_by_shape(tiny_model):
    found = mlp_matrices(tiny_model, 0)
    roles = sorted(role for _, role, _ in found)
    assert roles == (["in", "in", "out"] if tiny_model.gated else ["in", "out"])
    names = dict(tiny_model.hf.named_parameters())
    for name, _role, axis in found:
        assert names[name].shape[axis] == tiny_model.d_mlp
    out = [name for name, role, _ in found if role == "out"]
    assert out == [tiny_model.adapter.mlp_out_path(0) + ".weight"]
    assert get_module(tiny_model.hf, tiny_model.adapter.mlp_out_path(0)).weight is names[out[0]]


def test_synthetic_mask_on_labelled_neurons_is_full_overlap(tiny_model):
    neurons = [1, 3, tiny_model.d_mlp - 1]
    masks = {name: _neuron_mask(tiny_model, name, axis, neurons) for name, _, axis in mlp_matrices(tiny_model, 0)}
    frame = neuron_overlap(tiny_model, masks, [(0, n) for n in neurons])
    assert len(frame) == len(masks) and (frame["in_labelled"] == frame["math_specific"]).all()
    assert (frame["share"] == 1.0).all()
    assert np.allclose(frame["chance"], len(neurons) / tiny_model.d_mlp)
    assert np.allclose(frame["lift"], tiny_model.d_mlp / len(neurons))
    # the complement: every other neuron's rows/columns, none of the labelled ones
    others = [n for n in range(tiny_model.d_mlp) if n not in neurons]
    rest = {name: _neuron_mask(tiny_model, name, axis, others) for name, _, axis in mlp_matrices(tiny_model, 0)}
    assert (neuron_overlap(tiny_model, rest, [(0, n) for n in neurons])["share"] == 0.0).all()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("overlap") / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def real_run(embedded, store):
    """`+` classified at layer 3 (top 100) and MathNeuro masks at K = 0.05 from 40 built-in samples."""
    matched = classify_operator(embedded, store, "+", 100, settings=ClassifySettings(top_n=100), layers=[3]).matched
    samples = load_samples(n=40, max_single_token=embedded.max_single_token)
    math_scores, general_scores = mn.scores_for(embedded, samples, store)
    return matched, mn.math_specific(math_scores, general_scores, K)


def test_overlap_on_the_embedded_model(embedded, real_run):
    matched, masks = real_run
    frame = neuron_overlap(embedded, masks, matched)
    labelled = matched["neuron"].nunique()
    mlp_names = {name for layer in range(embedded.n_layers) for name, _, _ in mlp_matrices(embedded, layer)}
    assert set(frame["layer"]) == {3} and set(frame["matrix"]) <= mlp_names
    for row in frame.itertuples():
        assert row.in_labelled <= row.math_specific == int(masks[row.matrix].sum())
        assert 0.0 <= row.share <= 1.0
        assert row.chance == pytest.approx(labelled / embedded.d_mlp)
    assert frame["in_labelled"].sum() <= sum(int(masks[n].sum()) for n in mlp_names)
    layer = overlap_by_layer(frame)
    assert len(layer) == 1 and layer["in_labelled"].item() == frame["in_labelled"].sum()
    print(f"\noverlap, layer 3 of +, K={K}, {labelled} labelled neurons:\n"
          + frame.to_string(index=False) + "\n" + layer.to_string(index=False))
    assert all(math.isfinite(x) for x in [*frame["lift"], *layer["lift"]])


def test_ablation_vs_pruning(embedded, store, real_run):
    matched, masks = real_run
    table = ablation_vs_pruning(embedded, store, "+", masks, matched, max_op=100)
    print("\n" + table.to_string(index=False))
    assert list(table["condition"]) == ["clean", "ablate heuristic neurons", "prune MathNeuro", "both"]
    before = table["accuracy"].iloc[0]
    assert (table["accuracy"].iloc[1:] <= before).all() and (table["delta"].iloc[1:] <= 0).all()
    assert table["neurons"].iloc[1] == matched["neuron"].nunique() and table["weights"].iloc[2] == mn.mask_counts(masks)
