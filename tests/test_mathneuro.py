"""MathNeuro: streaming norms vs the published per-sample formula, padding, Conv1D / tied heads, masks, edits,
data files and the CLI parser."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from neurolab.analysis import mathneuro as mn
from neurolab.capture.norms import input_norms
from neurolab.capture.trace import intervened
from neurolab.errors import InputError
from neurolab.models.adapters import is_projection
from neurolab.tasks.samples import builtin_general, builtin_math, load_samples, read_texts

from .mathneuro_reference import reference_scores


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def weights_hash(model) -> str:
    digest = hashlib.blake2b()
    for name, p in sorted(model.hf.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_streaming_matches_per_sample_formula(embedded):
    texts = builtin_math(6, seed=1) + builtin_general(4, seed=1)
    modules = mn.scored_weights(embedded)
    streamed = mn.importance(modules, input_norms(embedded, modules, texts, batch_size=4))
    reference = reference_scores(embedded, modules, texts)
    for name in modules:
        torch.testing.assert_close(streamed[name], reference[name], rtol=1e-4, atol=1e-5)
        for k in (0.001, 0.01, 0.05):
            assert jaccard(mn.top_k_mask(streamed[name], k), mn.top_k_mask(reference[name], k)) == 1.0, (name, k)


def test_padding_never_counts(embedded):
    modules = mn.scored_weights(embedded)
    short, longer = "1+2=3", "capital of france is paris"
    alone = input_norms(embedded, modules, [short], batch_size=1)
    pair_alone = input_norms(embedded, modules, [longer], batch_size=1)
    batched = input_norms(embedded, modules, [short, longer], batch_size=2)
    for name in modules:
        torch.testing.assert_close(batched[name], alone[name] + pair_alone[name], rtol=1e-4, atol=1e-5)


def test_scored_weights_families(tiny_model):
    modules = mn.scored_weights(tiny_model)
    names = dict(tiny_model.hf.named_parameters())
    embed = f"{tiny_model.adapter.embed}.weight"
    assert modules and embed not in modules
    assert all(n in names and is_projection(m) for n, m in modules.items())
    head = f"{tiny_model.adapter.unembed}.weight"
    tied = tiny_model.hf.get_output_embeddings().weight is tiny_model.hf.get_input_embeddings().weight
    assert (head in modules) == (not tied)
    if tiny_model.adapter.family == "gpt2":
        assert tied and any(isinstance(m, Conv1D) for m in modules.values())
    texts = ["1+2=3", "12*3=36", "capital of france is paris"]
    reference = reference_scores(tiny_model, modules, texts)
    streamed = mn.importance(modules, input_norms(tiny_model, modules, texts, batch_size=2))
    for name in modules:
        torch.testing.assert_close(streamed[name], reference[name], rtol=1e-4, atol=1e-4)


def test_math_specific_excludes_general_topk():
    torch.manual_seed(0)
    math = {"w": torch.rand(40, 50)}
    general = {"w": math["w"] * 0.5 + torch.rand(40, 50) * 0.5}
    for k in (0.01, 0.05, 0.15):
        specific = mn.math_specific(math, general, k)["w"]
        assert not (specific & mn.top_k_mask(general["w"], k)).any()
        assert (specific <= mn.top_k_mask(math["w"], k)).all()
        assert int(mn.top_k_mask(math["w"], k).sum()) == int(k * 2000)
        rand = mn.random_masks({"w": specific}, seed=3)["w"]
        assert int(rand.sum()) == int(specific.sum())
        assert torch.equal(rand, mn.random_masks({"w": specific}, seed=3)["w"])


def test_prune_undo_bit_identical_and_beats_random(embedded):
    samples = load_samples(n=40, max_single_token=embedded.max_single_token)
    math_scores, general_scores = mn.scores_for(embedded, samples)
    before = weights_hash(embedded)
    specific = mn.math_specific(math_scores, general_scores, 0.05)
    iv = mn.edit(specific, 0.0)
    with intervened(embedded, iv):
        name = iv.steps[0].parameter
        assert (dict(embedded.hf.named_parameters())[name].detach().cpu()[iv.steps[0].mask] == 0).all()
    assert weights_hash(embedded) == before
    pruned = mn.full_grid_accuracy(embedded, iv, ops=("+",))
    random = mn.full_grid_accuracy(embedded, mn.edit(mn.random_masks(specific, 0), 0.0), ops=("+",))
    clean = mn.full_grid_accuracy(embedded, None, ops=("+",))
    assert weights_hash(embedded) == before
    assert clean["+"] - pruned["+"] > clean["+"] - random["+"] + 0.1


def test_sample_files(tmp_path):
    good = tmp_path / "math.jsonl"
    good.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(5)))
    assert read_texts(good, "math")[:2] == ["q0 0", "q1 1"]
    general = tmp_path / "general.csv"
    general.write_text("text\nalpha\nbeta\ngamma\n")
    samples = load_samples(good, general, n=2)
    assert samples.math == ("q0 0", "q1 1") and samples.general == ("alpha", "beta")
    shuffled = load_samples(good, general, n=5, shuffle=True, seed=1)
    assert sorted(shuffled.math) == sorted(read_texts(good, "math")) and shuffled.spec != samples.spec
    single = load_samples(good, general, single=True)
    assert len(single.math) == 1 and len(single.general) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,label\na,b\n")
    with pytest.raises(InputError, match="question.*answer.*text"):
        read_texts(bad, "math")
    with pytest.raises(InputError, match="'text'"):
        load_samples(good, bad)


def test_builtin_samples_as_trained():
    texts = builtin_math(8, seed=0)
    assert [t.split("=")[0].strip("0123456789") for t in texts[:4]] == ["+", "-", "*", "/"]
    a, rest = texts[0].split("+")
    b, r = rest.split("=")
    assert int(a) + int(b) == int(r)
    assert builtin_general(1000)[0] == "capital of france is paris"


def test_cli_parser(tmp_path):
    from neurolab.cli import mathneuro as cli
    from neurolab.cli import options

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    parents = {"model": options.model_options(), "store": options.store_options(), "grid": options.grid_options(),
               "importance": options.importance_options(), "intervention": options.intervention_options(),
               "quiet": options.quiet_option()}
    cli.add_parsers(sub, parents)
    args = parser.parse_args(["mathneuro", "--top-k", "0.01,0.05", "--prune", "--samples", "10",
                              "--out", str(tmp_path), "--store", str(tmp_path / "s.duckdb"), "--quiet"])
    assert args.prune and args.scale is None and cli.parse_ks(args.top_k) == [0.01, 0.05]
    with pytest.raises(SystemExit):
        parser.parse_args(["mathneuro", "--prune", "--scale", "1.1"])
    with pytest.raises(InputError):
        cli.parse_ks("0,2")


def test_norms_and_evaluation_cached(embedded, tmp_path):
    from neurolab.store import Store

    store = Store(tmp_path / "s.duckdb")
    samples = load_samples(n=8, max_single_token=embedded.max_single_token)
    math1, _, _table, evaluation = mn.run_mathneuro(embedded, samples, [0.05], store, factor=0.0)
    files = sorted((store.values_dir / "mathneuro").glob("*.safetensors"))
    assert len(files) == 2 and set(evaluation["method"]) == {"clean", "mathneuro", "random", "wanda"}
    math2, _, _, again = mn.run_mathneuro(embedded, samples, [0.05], store, factor=0.0)
    assert all(torch.equal(math1[n], math2[n]) for n in math1) and again.equals(evaluation)
    other = load_samples(n=8, seed=1, max_single_token=embedded.max_single_token)
    mn.run_mathneuro(embedded, other, [0.05], store)
    assert len(list((store.values_dir / "mathneuro").glob("*.safetensors"))) == 4
