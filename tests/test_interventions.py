"""One intervention mechanism: serialisable values, applied in one place, weight edits undone bit-exactly, no leaks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from neurolab.capture.interventions import (
    CLEAN,
    ActivationPatch,
    GridRef,
    Intervention,
    NeuronAblation,
    WeightEdit,
    ablation,
)
from neurolab.capture.trace import intervened, run
from neurolab.errors import InterventionError
from neurolab.models.adapters import get_module
from neurolab.store import Store

PROMPTS = ["23+45=", "7*8=", "99-3=", "capital of france is", "60/7="]


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.hf.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def out_proj(model, layer: int) -> str:
    return f"{model.adapter.mlp_out_path(layer)}.weight"


def value_vector_edit(model, layer: int, neurons: list[int], factor: float = 0.0) -> WeightEdit:
    """Scale the value vectors (rows of W_out as the math writes them) of ``neurons`` by ``factor``."""
    weight = get_module(model.hf, model.adapter.mlp_out_path(layer)).weight
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    if weight.shape[0] == model.d_mlp:  # GPT-2's Conv1D stores [in, out]
        mask[neurons] = True
    else:
        mask[:, neurons] = True
    return WeightEdit(out_proj(model, layer), mask, factor)


def test_json_round_trip_and_stable_key(embedded):
    edit = value_vector_edit(embedded, 2, [4, 9], 1.1)
    iv = Intervention((ablation(["L3N12", "L3N40"]).steps[0],
                       NeuronAblation(((1, 3),), "mean", grid=GridRef("+", 20)),
                       ActivationPatch(((3, 7),), "5+5="), edit), name="mixed")
    again = Intervention.from_json(json.loads(json.dumps(iv.to_json())), iv.tensors())
    assert again == iv and again.key == iv.key and again.name == "mixed"
    assert Intervention(iv.steps, name="other").key == iv.key  # the name is not part of the key
    assert Intervention(tuple(reversed(iv.steps))).key != iv.key  # order matters: steps compose in order
    assert CLEAN.key == "none" and not CLEAN
    # the key is the same in another process (no Python hash randomisation in it)
    code = ("from neurolab.capture.interventions import ablation; print(ablation(['L3N40', 'L3N12']).key)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == ablation(["L3N12", "L3N40"]).key
    with pytest.raises(InterventionError, match="mask"):
        Intervention.from_json(iv.to_json(), {})  # the weight mask is missing


def test_saved_listed_and_reloaded_from_the_store(embedded, tmp_path):
    store = Store(tmp_path / "s.duckdb")
    edit = value_vector_edit(embedded, 3, [1, 2, 3], 0.0)
    iv = Intervention((edit, *ablation(["L2N5"]).steps), name="prune and ablate")
    store.save_intervention(iv.to_json(), iv.tensors())
    listed = store.interventions()
    assert list(listed["name"]) == ["prune and ablate"] and list(listed["key"]) == [iv.key]
    store.close()
    reopened = Store(tmp_path / "s.duckdb")
    loaded = Intervention.from_json(*reopened.load_intervention("prune and ablate"))
    assert loaded == iv and torch.equal(loaded.steps[0].mask, edit.mask)
    reopened.close()


def test_weight_edits_are_undone_bit_exactly_even_after_an_exception(embedded):
    before = weights_digest(embedded)
    edit = value_vector_edit(embedded, 3, list(range(0, 512, 3)), 0.37)
    clean = run(embedded, PROMPTS)
    edited = run(embedded, PROMPTS, intervention=Intervention((edit,)))
    assert not np.array_equal(clean.top1_prob, edited.top1_prob)
    assert weights_digest(embedded) == before
    with pytest.raises(RuntimeError, match="inside"), intervened(embedded, Intervention((edit,))):
        assert weights_digest(embedded) != before  # applied while inside
        raise RuntimeError("failure inside the computation")
    assert weights_digest(embedded) == before
    assert np.array_equal(run(embedded, PROMPTS).top1_prob, clean.top1_prob)


def test_zero_ablation_equals_pruning_the_value_vectors(tiny_model):
    layer, neurons = tiny_model.n_layers - 1, [3, 17]
    clean = run(tiny_model, PROMPTS, logits=True)
    ablated = run(tiny_model, PROMPTS, layers=[layer], logits=True,
                  intervention=ablation([(layer, n) for n in neurons] + [(0, 5)]))
    assert (ablated.logits - clean.logits).abs().max() > 1e-4  # the ablation did something
    assert ablated.neurons[layer][:, neurons].abs().max() == 0
    pruned = Intervention((value_vector_edit(tiny_model, layer, neurons), value_vector_edit(tiny_model, 0, [5])))
    edited = run(tiny_model, PROMPTS, logits=True, intervention=pruned)
    assert (edited.logits - ablated.logits).abs().max() < 1e-5
    assert (run(tiny_model, PROMPTS, logits=True).logits - clean.logits).abs().max() == 0  # nothing leaked


def test_mean_constant_and_patch_set_the_values_they_say(embedded):
    grid = GridRef("+", 12)
    from neurolab.tasks.grid import OperandGrid, PromptTemplate

    prompts = OperandGrid("+", 12, embedded.max_single_token, PromptTemplate()).prompts
    reference = run(embedded, prompts, layers={3: [7, 8]}).neurons[3].mean(0)  # last position, clean
    mean = run(embedded, PROMPTS[:3], layers={3: [7, 8]},
               intervention=Intervention((NeuronAblation(((3, 7), (3, 8)), "mean", grid=grid),)))
    assert torch.allclose(mean.neurons[3], reference.expand(3, 2), atol=1e-5)
    constant = run(embedded, PROMPTS, layers={2: [1]}, intervention=ablation([(2, 1)], "constant", 2.5))
    assert torch.all(constant.neurons[2] == 2.5)
    source = run(embedded, ["5+5="], layers={3: [7]}).neurons[3][0]
    patched = run(embedded, PROMPTS, layers={3: [7]},
                  intervention=Intervention((ActivationPatch(((3, 7),), "5+5="),)))
    assert torch.allclose(patched.neurons[3][:, 0], source.expand(len(PROMPTS)))


def test_a_layers_grid_means_are_measured_once_for_all_its_neurons(embedded, monkeypatch):
    """A mean ablation measures every neuron of its layers in one pass; other neurons of those layers (a random
    control, the next pick) reuse it, and their means equal the ones measured alone."""
    from neurolab.capture import kept, trace

    run_pass = trace.run_pass
    grid = GridRef("+", 13)  # a grid no other test averages over, so nothing is kept for it yet
    passes = []
    monkeypatch.setattr(trace, "run_pass", lambda *a, **k: passes.append(1) or run_pass(*a, **k))
    first = run(embedded, PROMPTS[:2], layers={3: [7]},
                intervention=Intervention((NeuronAblation(((3, 7), (3, 300)), "mean", grid=grid),)))
    measured = len(passes)
    second = run(embedded, PROMPTS[:2], layers={3: [300]},
                 intervention=Intervention((NeuronAblation(((3, 300),), "mean", grid=grid),)))
    assert measured == 2 and len(passes) == measured + 1  # means + the pass itself; then the pass alone
    kept.cache_for(embedded.device).clear()
    alone = run(embedded, PROMPTS[:2], layers={3: [300]},
                intervention=Intervention((NeuronAblation(((3, 300),), "mean", grid=grid),)))
    assert torch.equal(alone.neurons[3], second.neurons[3]) and first.neurons[3].shape == (2, 1)


def test_bad_interventions_are_clear_errors(embedded):
    with pytest.raises(InterventionError, match="neurons 0..511"):
        run(embedded, PROMPTS, intervention=ablation(["L3N999"]))
    with pytest.raises(InterventionError, match="layer 9 does not exist"):
        run(embedded, PROMPTS, intervention=ablation(["L9N1"]))
    with pytest.raises(InterventionError, match="no parameter"):
        run(embedded, PROMPTS, intervention=Intervention((WeightEdit("no.such.weight", torch.ones(2, 2, dtype=bool)),)))
    with pytest.raises(InterventionError, match="mean ablation needs the grid"):
        NeuronAblation(((1, 1),), "mean")


def test_no_intervention_leaks_into_a_concurrent_clean_computation(embedded):
    """Two browser sessions are two threads: one edits weights, the other must see the clean model throughout."""
    clean = run(embedded, PROMPTS)
    edit = Intervention((value_vector_edit(embedded, 3, list(range(256)), 0.0),))
    seen, errors = [], []

    def editor() -> None:
        try:
            for _ in range(6):
                run(embedded, PROMPTS, intervention=edit)
        except Exception as error:
            errors.append(error)

    def reader() -> None:
        try:
            for _ in range(6):
                seen.append(run(embedded, PROMPTS).top1_prob)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=editor), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(s, clean.top1_prob) for s in seen)


def test_evaluation_and_importance_run_under_an_intervention(embedded, tmp_path):
    """The analyses take the intervention too: ablating the most important layer-3 neurons costs accuracy."""
    from neurolab.analysis.evaluation import evaluate
    from neurolab.analysis.importance import ensure_importance
    from neurolab.analysis.sweep import NeuronSelection, grid_for, run_sweep

    store = Store(tmp_path / "s.duckdb")
    sweep = run_sweep(embedded, store, "+", NeuronSelection("none"), 30)
    ranked = ensure_importance(embedded, store, sweep.sweep_id, grid_for(embedded, "+", 30), n_prompts=20)
    top = ranked[ranked["layer"] == 3].nsmallest(40, "rank")["neuron"].tolist()
    knocked = ablation([(3, n) for n in top], name="top-40 of layer 3")
    clean, ablated = evaluate(embedded, sample=300), evaluate(embedded, sample=300, intervention=knocked)
    assert ablated.scores["+"].accuracy < clean.scores["+"].accuracy - 0.2
    assert "top-40 of layer 3" in ablated.split
    under = run_sweep(embedded, store, "+", NeuronSelection("none"), 30, intervention=knocked)
    assert under.sweep_id != sweep.sweep_id
    assert store.prompts(under.sweep_id)["correct"].mean() < store.prompts(sweep.sweep_id)["correct"].mean()
    store.close()
