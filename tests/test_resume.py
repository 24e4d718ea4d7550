"""An edit costs only what it changes: every shortcut of :mod:`neurolab.capture.trace` equals the full pass.

A pass under an edit of layer L resumes at L from the clean residuals a clean pass kept; an edit of the last layer's
neurons needs no layer at all; several interventions run side by side in one batch. Each is compared with the full
pass (nothing kept: ``keep=False`` on an emptied cache) in float32, for edits in every layer, on the embedded model
and on a tiny model of every family; and each test checks that the shortcut was really taken.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolab.analysis.sweep import grid_for
from neurolab.capture import kept, trace
from neurolab.capture.interventions import GridRef, Intervention, WeightEdit, ablation
from neurolab.capture.trace import run, run_side_by_side
from neurolab.models.adapters import get_module

TOLERANCE = 1e-4


@pytest.fixture
def passes(monkeypatch):
    """Every Pass the engine runs, recorded (to tell which path was taken)."""
    seen = []
    real = trace.run_pass

    def recording(model, p, remote=False):
        seen.append(p)
        return real(model, p, remote)

    monkeypatch.setattr(trace, "run_pass", recording)
    kept.cache_for("cpu").clear()
    yield seen
    kept.cache_for("cpu").clear()


def full(model, prompts, intervention, **kwargs):
    """The reference: every layer computed, nothing kept or reused."""
    kept.cache_for(model.device).clear()
    return run(model, prompts, logits=True, intervention=intervention, keep=False, **kwargs)


def assert_same(fast, slow):
    assert (fast.logits - slow.logits).abs().max() < TOLERANCE
    assert np.array_equal(fast.top1, slow.top1)


def edits_of_each_layer(model):
    """A zero ablation in each layer (a few neurons), a mean ablation and a weight edit in layer 1."""
    grid = GridRef("+", 12)
    down = model.adapter.mlp_out_path(1) + ".weight"
    weight = get_module(model.hf, model.adapter.mlp_out_path(1)).weight
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask.view(-1)[::7] = True
    yield from ((layer, ablation([(layer, n) for n in range(0, 40, 3)])) for layer in range(model.n_layers))
    yield 1, Intervention((*ablation([(1, 5), (1, 9)], "mean", grid=grid).steps,))
    yield 1, Intervention((WeightEdit(down, mask, 0.0),))


@pytest.mark.parametrize("share_prefix", [True, False])
def test_resumed_passes_equal_the_full_pass_on_the_embedded_model(embedded, passes, share_prefix):
    prompts = grid_for(embedded, "+", 25).prompts
    for layer, intervention in edits_of_each_layer(embedded):
        slow = full(embedded, prompts, intervention, share_prefix=share_prefix)
        run(embedded, prompts, share_prefix=share_prefix)  # the clean pass keeps its residuals
        passes.clear()
        fast = run(embedded, prompts, logits=True, intervention=intervention, share_prefix=share_prefix)
        assert_same(fast, slow)
        last = layer == embedded.n_layers - 1 and not intervention.weight_edits
        suffix_passes = [p for p in passes if not p.cache]
        if last:
            assert not passes, "an edit of the last layer's neurons runs no layer"
        elif layer > 0:
            assert suffix_passes and all(p.resume is not None and p.resume[0] == layer for p in suffix_passes)


def test_resumed_passes_equal_the_full_pass_on_every_family(tiny_model, passes):
    prompts = grid_for(tiny_model, "*", 12).prompts
    for layer, intervention in edits_of_each_layer(tiny_model):
        slow = full(tiny_model, prompts, intervention)
        run(tiny_model, prompts)
        passes.clear()
        fast = run(tiny_model, prompts, logits=True, intervention=intervention)
        assert_same(fast, slow)
        if layer == tiny_model.n_layers - 1 and not intervention.weight_edits:
            assert not passes
        elif layer > 0:
            assert any(p.resume is not None for p in passes)


def test_side_by_side_equals_each_alone(embedded, passes):
    prompts = grid_for(embedded, "-", 40).prompts
    ids = torch.as_tensor(np.asarray(embedded.number_token_ids)[np.asarray(grid_for(embedded, "-", 40).answers)])
    both = [ablation([(2, n) for n in range(10)]), ablation([(3, n) for n in range(100, 130)])]
    alone = [full(embedded, prompts, iv, token_ids=ids[:, None]) for iv in both]
    run(embedded, prompts)
    passes.clear()
    together = run_side_by_side(embedded, prompts, both, token_ids=ids[:, None], logits=True)
    for fast, slow in zip(together, alone):
        assert_same(fast, slow)
        assert np.abs(fast.token_probs - slow.token_probs).max() < 1e-5
    suffix = [p for p in passes if not p.cache]
    assert len(suffix) == 1 and suffix[0].resume[0] == 2  # one batch, from the first layer either edits
    assert suffix[0].inputs["input_ids"].shape[0] == 2 * len(prompts)


def test_row_masks_resume_too(embedded, passes):
    """Prompt knockout's per-prompt masks (plain path) resume from the masked layer."""
    prompts = grid_for(embedded, "+", 12).prompts
    mask = torch.zeros(len(prompts), embedded.d_mlp, dtype=torch.bool)
    mask[::2, :50] = True
    slow = full(embedded, prompts, None, row_mask={2: mask})
    run(embedded, prompts, row_mask={2: torch.zeros_like(mask)})  # plain path, clean: keeps
    run(embedded, prompts, share_prefix=False)
    passes.clear()
    fast = run(embedded, prompts, logits=True, row_mask={2: mask})
    assert_same(fast, slow)
    assert passes and passes[0].resume is not None and passes[0].resume[0] == 2


def test_kept_cache_is_bounded_and_keyed():
    cache = kept.DeviceCache(budget=1000)
    assert cache.put("a", torch.zeros(100))  # 400 bytes
    assert cache.put("b", torch.zeros(100))
    assert cache.put("c", torch.zeros(100))  # evicts a
    assert cache.get("a") is None and cache.get("b") is not None
    assert cache.used <= cache.budget
    assert not cache.put("huge", torch.zeros(1000))  # larger than the budget: not kept


def test_some_prompts_of_a_kept_grid_start_from_its_rows(embedded, passes):
    """Heuristic knockout runs a few prompts of the grid per heuristic: they start from the grid's kept rows."""
    prompts = grid_for(embedded, "+", 25).prompts
    some = prompts[::7][:40] + prompts[3:9]
    for layer in (2, embedded.n_layers - 1):
        intervention = ablation([(layer, n) for n in range(0, 60, 2)])
        slow = full(embedded, some, intervention)
        run(embedded, prompts)  # the grid, clean: kept
        passes.clear()
        fast = run(embedded, some, logits=True, intervention=intervention)
        assert_same(fast, slow)
        if layer == embedded.n_layers - 1:
            assert not passes
        else:
            assert [p.resume[0] for p in passes if not p.cache] == [layer]


def test_captures_under_a_last_layer_edit_run_the_layer(embedded, passes):
    """A capture of the edited layer needs its neurons: the layer runs (resumed), and the captured values are edited."""
    prompts = grid_for(embedded, "+", 12).prompts
    last = embedded.n_layers - 1
    intervention = ablation([(last, 5), (last, 9)])
    slow = full(embedded, prompts, intervention, layers={last: [5, 6]})
    run(embedded, prompts)
    passes.clear()
    fast = run(embedded, prompts, {last: [5, 6]}, logits=True, intervention=intervention)
    assert_same(fast, slow)
    assert torch.all(fast.neurons[last][:, 0] == 0) and torch.equal(fast.neurons[last], slow.neurons[last])
    assert any(p.resume is not None and p.resume[0] == last for p in passes)
