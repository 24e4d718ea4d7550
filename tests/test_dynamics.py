"""Training dynamics, chance-corrected shares and template robustness, on the shipped checkpoints and tiny models."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from neurolab.analysis.atlas import atlas, counts
from neurolab.analysis.dynamics import Checkpoint, DynamicsSettings, embedded_series, parse_series, run_series
from neurolab.analysis.robustness import compare, template_robustness, templates_with
from neurolab.analysis.significance import (
    benjamini_hochberg,
    grouped_q_values,
    hypergeometric_p,
    with_significance,
)
from neurolab.cli import dynamics as dynamics_cli
from neurolab.cli import options
from neurolab.errors import InputError
from neurolab.heuristics import RULES_VERSION
from neurolab.models.loading import load_model
from neurolab.store import Store, deferred

from .tiny_models import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "data" / "models" / "neurolab-arith" / "checkpoints"
#: small enough for a test: a 30 x 30 grid, 64 neurons classified, the top 32 counted, 10 ablated
SMALL = DynamicsSettings(max_op=30, classify_top=64, share_top=32, ablate_n=10)
TINY = DynamicsSettings(max_op=12, classify_top=16, share_top=8, ablate_n=4)


def brute_p(count: int, k: int, good: int, total: int) -> float:
    ways = sum(math.comb(good, x) * math.comb(total - good, k - x) for x in range(count, min(k, good) + 1))
    return ways / math.comb(total, k)


def test_hypergeometric_p_values_are_exact():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        total = int(rng.integers(2, 300))
        good, k = int(rng.integers(0, total + 1)), int(rng.integers(0, total + 1))
        rows.append((int(rng.integers(0, k + 1)), k, good, total))
    rows.append((60, 60, 100, 10_000))  # a perfect top-60 on a 1% heuristic: ~1e-120, not rounded to 0
    got = hypergeometric_p(*np.array(rows).T)
    want = np.array([brute_p(*r) for r in rows])
    assert np.allclose(got, want, rtol=1e-9, atol=0) and 0 < got[-1] < 1e-100
    with pytest.raises(ValueError):
        hypergeometric_p(np.array([1]), np.array([5]), np.array([3]), np.array([4]))  # k > P


def test_benjamini_hochberg_matches_its_definition_and_groups_of_ties():
    rng = np.random.default_rng(1)
    p = np.round(rng.random(300) ** 3, 2)  # many ties
    m, order = len(p), np.argsort(p, kind="stable")
    want = np.empty(m)
    ranked = p[order] * m / np.arange(1, m + 1)
    for i in range(m):
        want[order[i]] = min(ranked[i:].min(), 1.0)
    assert np.allclose(benjamini_hochberg(p), want)
    tests = pd.DataFrame({"run": rng.integers(0, 2, 400), "count": rng.integers(0, 6, 400), "k": 5,
                          "satisfied": rng.integers(1, 40, 400), "total": 100})
    expanded = tests.assign(q=0.0)
    for _, part in tests.groupby("run"):
        p_rows = hypergeometric_p(part["count"], part["k"], part["satisfied"], part["total"])
        expanded.loc[part.index, "q"] = benjamini_hochberg(p_rows)
    groups = tests.groupby(["run", "count", "k", "satisfied", "total"]).size().rename("rows").reset_index()
    merged = expanded.merge(grouped_q_values(groups, ["run"]), on=["run", "count", "k", "satisfied", "total"])
    assert len(merged) == len(tests) and np.allclose(merged["q"], merged["q_value"])


def test_series_parse_embedded_revisions_and_folders(tmp_path):
    series = embedded_series()
    assert [c.step for c in series] == [250, 500, 1000, 1500, 2000, 3000, 4000, 6000]
    assert series[-1].name == "embedded" and parse_series("embedded") == series
    revs = parse_series("EleutherAI/pythia-70m@step1000, step143000")
    assert [(c.name, c.revision, c.step) for c in revs] == [("EleutherAI/pythia-70m", "step1000", 1000),
                                                            ("EleutherAI/pythia-70m", "step143000", 143000)]
    assert [c.step for c in parse_series(f"{CHECKPOINTS / 'step-00500'},{CHECKPOINTS / 'step-02000'}")] == [500, 2000]
    for bad in ("", "model@", str(tmp_path / "missing") + ",x"):
        with pytest.raises(InputError):
            parse_series(bad)


@pytest.fixture(scope="module")
def series_store(tmp_path_factory) -> tuple[Store, list[Checkpoint]]:
    store = Store(tmp_path_factory.mktemp("dynamics") / "store.duckdb")
    return store, parse_series(f"{CHECKPOINTS / 'step-00250'},{CHECKPOINTS / 'step-04000'}")


def test_a_series_over_shipped_checkpoints_is_cached_per_checkpoint(series_store):
    store, series = series_store
    dynamics = run_series(store, series, "+", settings=SMALL)
    table = dynamics.table()
    assert table["step"].tolist() == [250, 4000] and table["fingerprint"].nunique() == 2
    for kind in ("any", "range", "modulo", "pattern"):
        assert (table[f"share_{kind}_significant"] <= table[f"share_{kind}_raw"] + 1e-12).all()
    assert table["accuracy_+"].iloc[1] > table["accuracy_+"].iloc[0]  # the model learns between steps 250 and 4000
    assert (table["ablated"] == 10).all() and table["accuracy_ablated"].iloc[1] < table["accuracy_control"].iloc[1]
    assert table["intersection_raw"].iloc[-1] == 1.0 and 0 <= table["intersection_raw"].iloc[0] < 1.0
    matches = dynamics.matches
    assert matches["significant"].any() and (matches["q_value"] >= matches["p_value"] - 1e-15).all()
    stages: list[str] = []
    again = run_series(store, series, "+", settings=SMALL, progress=lambda d, t, s: stages.append(s))
    assert all("loading" in s or s.endswith(("step-00250", "step-04000")) for s in stages), stages  # nothing computed
    pd.testing.assert_frame_equal(again.table(), table)
    neuron = dynamics.neuron(int(matches["layer"].iloc[0]), int(matches["neuron"].iloc[0]))
    assert set(neuron["checkpoint"]) <= {"step-00250", "step-04000"} and len(neuron)


def test_the_atlas_gives_p_and_q_values_and_significant_counts(series_store):
    store, series = series_store
    deferred.flush()
    model = load_model(series[-1].name)
    rows = atlas(store, model.fingerprint)
    assert {"p_value", "q_value", "significant"} <= set(rows.columns) and rows["p_value"].notna().all()
    assert not (rows["significant"] & ~(rows["q_value"] <= 0.01)).any()
    every = atlas(store, model.fingerprint, matched_only=False)
    assert len(every) > len(rows) and (every["significant"] <= every["score"].ge(0.6)).all()
    # the atlas' grouped BH over the whole run equals a row-by-row BH over the same rows
    direct = with_significance(store.atlas_rows(model.fingerprint, RULES_VERSION, False), 900)  # P: 30 x 30
    assert np.allclose(direct["q_value"], every["q_value"])
    table = counts(rows)
    assert (table["significant"] <= table["neurons"]).all() and table["significant"].sum() > 0


def test_template_robustness_and_compare(series_store, embedded):
    store, _ = series_store
    assert list(templates_with("Q: {op1} {op} {op2} =")) == ["plain", "spaced", "fewshot", "custom"]
    chosen = {name: t for name, t in templates_with("Q: {op1} {op} {op2} =").items() if name in ("plain", "custom")}
    result = template_robustness(embedded, store, "+", chosen, TINY)
    assert result.templates == ["plain", "custom"]
    survival = result.survival().set_index("template")
    assert survival.loc["plain", "survive_raw"] == 1.0 and (survival["survive_raw"] <= 1.0).all()
    heuristics = result.heuristics()
    row = heuristics.iloc[0]
    assert row["holds"].startswith("plain") and set(filter(None, (row["holds"] + ", " + row["lost"]).split(", "))) \
        == set(result.templates)
    card = result.card(int(row["layer"]), int(row["neuron"]))
    assert row["heuristic"] in set(card["heuristic"]) and "plain" in card.set_index("heuristic").loc[
        row["heuristic"], "holds under"]
    plain, fewshot = (result.matches[result.matches["template"] == t] for t in ("plain", "fewshot"))
    side = compare(plain, fewshot, int(row["layer"]))
    assert set(side["holds"]) <= {"both", "A only", "B only"} and (side["holds"] == "both").sum() == len(
        plain[plain["layer"] == row["layer"]].merge(fewshot, on=["layer", "neuron", "heuristic"]))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    parents = {"model": options.model_options(), "store": options.store_options(), "grid": options.grid_options(),
               "quiet": options.quiet_option()}
    dynamics_cli.add_parsers(sub, parents)
    return parser.parse_args(argv)


def test_cli_on_tiny_local_revisions_resumes_and_recomputes_nothing(tmp_path, capsys):
    folders = [save_tiny_model(tmp_path / f"tiny-step-{step}", "gpt-neox", seed=step) for step in (10, 20)]
    argv = ["dynamics", "--series", ",".join(map(str, folders)), "--op", "+", "--max-op", "20", "--classify-top", "16",
            "--share-top", "8", "--ablate-n", "4", "--store", str(tmp_path / "s.duckdb"), "--quiet",
            "--out", str(tmp_path / "t.csv")]
    args = _cli(argv)
    assert args.run(args) == 0
    first = capsys.readouterr().out
    assert "over 2 checkpoints" in first and "tiny-step-10" in first
    table = pd.read_csv(tmp_path / "t.csv")
    last = table["intersection_raw"].iloc[-1]
    assert table["step"].tolist() == [10, 20] and (last == 1.0 or np.isnan(last))  # NaN: no match at the end
    store = Store(tmp_path / "s.duckdb")
    before = len(store.analyses())
    store.close()
    args = _cli(argv)
    assert args.run(args) == 0 and capsys.readouterr().out.splitlines()[1:] == first.splitlines()[1:]
    assert len(Store(tmp_path / "s.duckdb").analyses()) == before
    args = _cli([*argv, "--share-top", "32"])  # the last --share-top wins: more than the 16 classified
    with pytest.raises(InputError, match="share_top"):
        args.run(args)


def test_page_computes_a_series_and_moves_the_slider(pages_store):
    at = AppTest.from_file(str(ROOT / "pages" / "7_Training_Dynamics.py"), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    for key, value in (("max_op", TINY.max_op), ("classify_top", TINY.classify_top), ("share_top", TINY.share_top),
                       ("ablate_n", TINY.ablate_n)):
        at.number_input(key=f"dyn_{key}").set_value(value)
    at.text_input(key="dyn_series").set_value(f"{CHECKPOINTS / 'step-00250'},{CHECKPOINTS / 'step-04000'}").run()
    assert any("not computed" in i.value for i in at.info)
    at.button(key="dyn_compute").click().run()
    assert not at.exception, at.exception
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(titles) == 5 and any("significant at FDR" in t for t in titles)  # 4 lines + the neuron's heatmap
    at.select_slider(key="dyn_checkpoint").set_value("step-00250").run()
    assert not at.exception and any("at step-00250" in m.value for m in at.markdown)
