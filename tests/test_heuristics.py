"""The heuristic classifier on synthetic activation maps: planted heuristics are found, noise and constants are not,
science.md's k rules and post-processing hold, and the vectorised path equals the loop reference."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pandas as pd
import pytest

from neurolab.heuristics import REGISTRY, parse
from neurolab.heuristics.classifier import FAMILIES, classify, matches, static_heuristics
from neurolab.tasks.arithmetic import answer, valid_pairs

from .heuristics_reference import classify_reference

MAX_OP, MAX_TOKEN = 100, 999


@cache
def grid(op: str, max_op: int = MAX_OP, max_single_token: int = MAX_TOKEN) -> tuple[np.ndarray, ...]:
    pairs = np.array(valid_pairs(op, max_op, max_single_token))
    op1, op2 = pairs[:, 0], pairs[:, 1]
    result = np.array([answer(a, op, b) for a, b in pairs])
    for array in (op1, op2, result):
        array.flags.writeable = False
    return op1, op2, result


def planted(fires: np.ndarray, seed: int, amplitude: float = 1.0) -> np.ndarray:
    """A neuron that fires where ``fires`` holds, with a little noise everywhere (no ties)."""
    return amplitude * fires + 0.1 * np.random.default_rng(seed).normal(size=len(fires))


def row(frame: pd.DataFrame, neuron: int, heuristic: str) -> pd.Series:
    rows = frame[(frame["neuron"] == neuron) & (frame["heuristic"] == heuristic)]
    assert len(rows) == 1, f"neuron {neuron} has {len(rows)} rows for {heuristic}"
    return rows.iloc[0]


def matched_names(frame: pd.DataFrame, neuron: int) -> set[str]:
    return set(frame[(frame["neuron"] == neuron) & frame["matched"]]["heuristic"])


PLANTS = {  # heuristic that must be recovered -> when the neuron fires, on the + grid
    "op1_3mod7": lambda op1, op2, result: op1 % 7 == 3,
    "result_range_40_50": lambda op1, op2, result: (40 <= result) & (result < 50),
    "same_operand": lambda op1, op2, result: op1 == op2,
    "result_pattern_..7": lambda op1, op2, result: result % 10 == 7,
    "op1_range_0_50": lambda op1, op2, result: op1 < 50,
}
N_NOISE = 50
CONSTANT = {"zero": 0.0, "offset": 3.7}


@pytest.fixture(scope="module")
def addition() -> tuple[np.ndarray, pd.DataFrame]:
    """Planted neurons, then 50 Gaussian noise neurons, then constant ones (one with 1e-9 jitter)."""
    op1, op2, result = grid("+")
    rng = np.random.default_rng(0)
    rows = [planted(fires(op1, op2, result), seed) for seed, fires in enumerate(PLANTS.values())]
    rows[-1] = (op1 < 50).astype(float)  # a two-valued plateau: ties everywhere
    rows += list(rng.normal(size=(N_NOISE, len(op1))))
    rows += [np.full(len(op1), value) for value in CONSTANT.values()]
    rows.append(3.7 + 1e-9 * rng.normal(size=len(op1)))
    maps = np.stack(rows)
    return maps, classify(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN)


@pytest.mark.parametrize("neuron, name", list(enumerate(PLANTS)))
def test_planted_heuristic_is_recovered(addition, neuron, name):
    _, frame = addition
    found = row(frame, neuron, name)
    assert found["score"] >= 0.6 and found["matched"] and found["side"] == "top"
    assert found["lift"] == pytest.approx(found["score"] / found["base_rate"])


def test_columns_and_families(addition):
    _, frame = addition
    assert list(frame.columns[:12]) == ["neuron", "heuristic", "family", "group", "direct", "params", "score", "k",
                                        "base_rate", "lift", "side", "matched"]
    assert set(frame["family"]) <= set(FAMILIES)
    assert not frame.duplicated(["neuron", "heuristic"]).any()
    assert set(frame["group"]) == {"range", "modulo", "pattern", "other"}
    assert (frame["direct"] == frame["heuristic"].str.startswith("result")).all()


def test_ties_do_not_rank_prompts_by_grid_order(addition):
    _, frame = addition
    plateau = len(PLANTS) - 1  # 1.0 for op1 < 50, else exactly 0.0
    # grid order would put op1 = 0..9 first: op1_range_0_10 and op1_value_000 would score 1.0
    assert row(frame, plateau, "op1_range_0_10")["score"] < 0.3
    assert not matched_names(frame, plateau) & {"op1_range_0_10", "op1_value_000"}


def test_noise_neurons_match_nothing_on_the_addition_grid(addition):
    _, frame = addition
    noise = range(len(PLANTS), len(PLANTS) + N_NOISE)
    scored = frame[frame["neuron"].isin(noise)]
    assert scored["neuron"].nunique() == N_NOISE
    # honest only because no + heuristic has a chance level above 0.5; see the next test for the other operators
    assert scored["base_rate"].max() <= 0.5
    assert not scored["matched"].any()
    assert scored["score"].max() < 0.56


@pytest.mark.parametrize("op", ["-", "*", "/"])
def test_noise_matches_only_at_chance(op):
    op1, op2, result = grid(op)
    maps = np.random.default_rng(1).normal(size=(N_NOISE, len(op1)))
    found = matches(classify(maps, op, op1, op2, result, MAX_OP, MAX_TOKEN, bottom=True))
    # the raw score is not corrected for chance: heuristics most prompts satisfy (- result_range_0_50: 0.75) or
    # judged on few prompts (* result mods: k capped at max_op) reach 0.6 on noise; nothing beyond that
    z = (found["score"] - found["base_rate"]) / np.sqrt(found["base_rate"] * (1 - found["base_rate"]) / found["k"])
    assert (z < 5).all() and (found["base_rate"] >= 0.4).all(), found[z >= 5]


def test_constant_neurons_get_no_rows(addition):
    maps, frame = addition
    constant = set(range(len(maps) - len(CONSTANT) - 1, len(maps)))
    assert not set(frame["neuron"]) & constant
    op1, op2, result = grid("+")
    both_sides = classify(maps[sorted(constant)], "+", op1, op2, result, MAX_OP, MAX_TOKEN, bottom=True)
    assert both_sides.empty and list(both_sides.columns) == list(frame.columns)


def test_degenerate_heuristics_are_absent(addition):
    _, frame = addition
    for op in "+-*/":
        heuristics = static_heuristics(op, *grid(op), MAX_OP, MAX_TOKEN)
        names = {h.name for h in heuristics}
        assert all(0 < h.mask.mean() < 1 and 1 <= h.k <= len(h.mask) for h in heuristics)
        assert "op1_range_0_100" not in names and "both_operands_range_0_100" not in names
        assert "same_operand" in names and ("result_0mod2" in names) == (op != "/")
    assert not frame["heuristic"].isin(["op1_range_0_100", "op2_range_0_100"]).any()


def test_k_rules():
    heuristics = {h.name: h for h in static_heuristics("*", *grid("*"), MAX_OP, MAX_TOKEN)}
    n_prompts = len(grid("*")[0])  # 3,390: f = 0.339
    assert heuristics["op1_3mod7"].k == 14 * 100 * n_prompts // 100 ** 2
    assert heuristics["both_operands_1mod4"].k == 25 ** 2 * n_prompts // 100 ** 2
    assert heuristics["result_0mod2"].k == 100  # 50**2 * f capped at max_op for *
    assert heuristics["same_operand"].k == 31  # sqrt(max_single_token) for *
    assert heuristics["op1_range_3_6"].k == heuristics["op1_range_3_6"].mask.sum()


def test_op2_range_uses_its_own_k_on_subtraction():
    op1, op2, result = grid("-")
    fires = (60 <= op2) & (op2 < 90)
    frame = classify(planted(fires, 3)[None], "-", op1, op2, result, MAX_OP, MAX_TOKEN)
    found = row(frame, 0, "op2_range_60_90")
    assert found["k"] == fires.sum() == 765  # op1's count (2,265) would cap the score at 765 / 2265 = 0.34
    assert row(frame, 0, "op1_range_60_90")["k"] == 2265
    assert found["score"] >= 0.6 and found["matched"]


def test_negative_neuron_needs_the_bottom_side():
    op1, op2, result = grid("+")
    maps = np.where((30 <= op2) & (op2 < 60), -5.0, 0.0)[None]
    top_only = row(classify(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN), 0, "op2_range_30_60")
    assert top_only["score"] < 0.6 and not top_only["matched"]
    both = row(classify(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN, bottom=True), 0, "op2_range_30_60")
    assert both["score"] == 1.0 and both["matched"] and both["side"] == "bottom"


@pytest.mark.parametrize("mode, expected", [
    ("hybrid", {"op1_3mod7", "result_range_40_50"}), ("K", {"op1_3mod7"}), ("KV", {"result_range_40_50"})])
def test_hybrid_judges_result_heuristics_on_kv_maps(mode, expected):
    op1, op2, result = grid("+")
    k_maps = planted(op1 % 7 == 3, 4)[None]
    kv_maps = planted((40 <= result) & (result < 50), 5)[None]
    frame = classify(k_maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN, kv_maps=kv_maps, mode=mode)
    assert matched_names(frame, 0) & {"op1_3mod7", "result_range_40_50"} == expected


def test_division_multi_value_and_result_zero_post_processing():
    op1, op2, result = grid("/")
    maps = np.stack([planted(np.isin(result, [1, 2]), 6), planted(np.isin(result, [0, 1]), 7)])
    frame = classify(maps, "/", op1, op2, result, MAX_OP, MAX_TOKEN)
    found = row(frame, 0, "result_multi_value_2=[1, 2]")
    assert found["score"] >= 0.95 and found["matched"] and found["k"] == 1000 and found["group"] == "other"
    zero = row(frame, 1, "result_multi_value_2=[0, 1]")
    assert zero["score"] >= 0.95 and not zero["matched"] and zero["note"]
    assert row(frame, 1, "result_range_0_2")["score"] >= 0.95  # scored (for comparison) but dropped
    assert not matched_names(frame, 1) & {"result_range_0_2", "result_range_0_10", "result_range_0_100"}
    assert not frame["family"].eq("result_mod").any()
    assert frame.loc[frame["family"].eq("result_pattern"), "heuristic"].str.startswith("result_value_").all()


def test_division_keeps_full_value_result_patterns():
    """science.md: for `/` the published code drops only result names containing `pattern`, so `result_value_*`
    survives. Result 7 holds 89 prompts of the / grid, k = 9,900 // 100 = 99."""
    op1, op2, result = grid("/")
    frame = classify(planted(result == 7, 13)[None], "/", op1, op2, result, MAX_OP, MAX_TOKEN)
    found = row(frame, 0, "result_value_007")
    assert found["score"] == pytest.approx(89 / 99) and found["matched"] and found["direct"]
    assert found["family"] == "result_pattern" and found["group"] == "pattern"
    assert not frame["heuristic"].str.startswith("result_pattern_").any()  # ..7, 0.7, .07 took slots, then dropped


@pytest.mark.parametrize("first, second, expected", [(21, 12, "op1_pattern_0.1"), (12, 21, "op1_pattern_0.2")])
def test_tied_patterns_are_ranked_by_first_occurrence(first, second, expected):
    """Top 100 prompts: op1 = ``first`` 50 times, then op1 = ``second`` 50 times. Counts: ``0..`` 100, the rest 50.
    The 5 slots: ``0..``, the two full values, then two of six tied one-wildcard patterns, by first occurrence:
    ``first``'s ``02.``/``01.`` (a prefix, dropped) and ``0.1``/``0.2``. Ranked by text, ``.12`` and ``.21`` won."""
    op1, op2, result = grid("+")
    fires = np.where((op1 == first) & (op2 < 50), 2.0, 0.0) + np.where((op1 == second) & (op2 < 50), 1.0, 0.0)
    maps = (fires + 0.01 * np.random.default_rng(14).normal(size=len(op1)))[None]
    frame = classify(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN)
    op1_patterns = set(frame.loc[frame["family"].eq("operand_pattern") & frame["heuristic"].str.startswith("op1_"),
                                 "heuristic"])
    assert op1_patterns == {f"op1_value_{first:03d}", f"op1_value_{second:03d}", expected}
    assert row(frame, 0, expected)["score"] == 0.5
    pd.testing.assert_frame_equal(frame, classify_reference(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN))


def test_multiplication_result_zero_is_not_also_a_zero_digit_heuristic():
    op1, op2, result = grid("*")
    frame = classify(planted(result == 0, 8)[None], "*", op1, op2, result, MAX_OP, MAX_TOKEN)
    assert row(frame, 0, "result_value_000")["matched"]
    for name in ["result_0mod2", "result_0mod10", "result_pattern_.00", "result_pattern_0.0"]:
        dropped = row(frame, 0, name)
        assert dropped["score"] == 1.0 and not dropped["matched"]
    assert not any(name.startswith("result_0mod") for name in matched_names(frame, 0))


def test_matches_sorts_matched_rows(addition):
    _, frame = addition
    found = matches(frame)
    assert found["matched"].all() and len(found) == frame["matched"].sum()
    assert found.equals(found.sort_values(["neuron", "score"], ascending=[True, False], ignore_index=True))


def test_bad_input_is_refused():
    op1, op2, result = grid("+")
    maps = np.zeros((1, len(op1)))
    with pytest.raises(ValueError, match="kv_maps"):
        classify(maps, "+", op1, op2, result, MAX_OP, MAX_TOKEN, mode="hybrid")
    with pytest.raises(ValueError, match="NaN"):
        classify(np.full_like(maps, np.nan), "+", op1, op2, result, MAX_OP, MAX_TOKEN)
    with pytest.raises(ValueError, match="prompts"):
        classify(maps[:, :10], "+", op1, op2, result, MAX_OP, MAX_TOKEN)


# small grids; + and * with a single-token limit that cuts them; / large enough that the top 1000 is not everything
@pytest.mark.parametrize("op, max_op, max_single_token",
                         [("+", 30, 40), ("-", 30, 999), ("*", 30, 200), ("/", 50, 999)])
@pytest.mark.parametrize("mode, bottom", [("K", False), ("hybrid", True)])
def test_vectorised_equals_loop_reference(op, max_op, max_single_token, mode, bottom):
    op1, op2, result = grid(op, max_op, max_single_token)
    rng = np.random.default_rng(len(op1))
    maps = rng.normal(size=(20, len(op1)))
    maps[0] = planted(op1 % 3 == 1, 9)
    maps[1] = -5.0 * (op2 < 10)  # negative, with ties
    maps[2] = np.round(maps[2], 1)  # many ties
    maps[3] = 1.5  # constant
    maps[4] = planted(np.isin(result, [1, 2, 3]), 12)  # a multi-value for /
    maps[5] = planted(result % 10 == 4, 10)
    maps[6] = planted(result == 0, 11)
    kv_maps = maps * rng.uniform(0.5, 1.5, size=maps.shape) if mode == "hybrid" else None
    args = (maps, op, op1, op2, result, max_op, max_single_token)
    fast = classify(*args, kv_maps=kv_maps, mode=mode, bottom=bottom, seed=3)
    slow = classify_reference(*args, kv_maps=kv_maps, mode=mode, bottom=bottom, seed=3)
    assert fast["matched"].any() and not (fast["neuron"].eq(3) & ~fast["direct"]).any()  # 3: constant K map
    key = ["neuron", "heuristic"]
    assert set(map(tuple, fast[fast["matched"]][key].values)) == set(map(tuple, slow[slow["matched"]][key].values))
    pd.testing.assert_frame_equal(fast, slow, check_exact=False, atol=1e-9, rtol=0)
    if op == "/":
        assert fast["family"].eq("multi_value").any() and fast["heuristic"].str.startswith("result_value_").any()
    if bottom:
        assert fast["side"].eq("bottom").any()


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_registry_reads_every_name_back(op):
    """Every name the classifier writes parses back to its family and params, and the registry's matching set is
    the one the classifier scored (its mask, or its base rate for the per-neuron patterns and multi-values)."""
    op1, op2, result = grid(op)
    for h in static_heuristics(op, op1, op2, result, MAX_OP, MAX_TOKEN):
        family, params = parse(h.name)
        assert (family.name, params) == (h.family, h.params) and family.format(params) == h.name
        assert np.array_equal(family.matching_set(params, op1, op2, result), h.mask)
    maps = np.stack([planted(result % 10 == 4, 15), planted(np.isin(result, [1, 2]), 16), planted(op2 % 10 == 3, 17)])
    found = classify(maps, op, op1, op2, result, MAX_OP, MAX_TOKEN)
    found = found[found["family"].isin(["operand_pattern", "result_pattern", "multi_value"])]
    assert len(found) and set(found["family"]) >= {"operand_pattern", "result_pattern"}
    for name, family_name, params, base_rate in found[["heuristic", "family", "params", "base_rate"]].values:
        family, parsed = parse(name)
        assert family.name == family_name and parsed == json.loads(params)
        assert family.matching_set(parsed, op1, op2, result).mean() == pytest.approx(base_rate)


def test_registry_refuses_names_it_does_not_write():
    for name in ["op1_value_.2.", "op1_pattern_123", "result_pattern_...", "result_multi_value_3=[1, 2]", "op1_03mod7",
                 "op3_1mod2", "both_operands_range_0_", "result_value_12", "same_operands", ""]:
        assert parse(name) is None, name
    assert REGISTRY["same_operand"].result_predicate({}) is None
    assert REGISTRY["operand_range"].result_predicate({"operand": 1, "lo": 0, "hi": 10}) is None
    predicate = REGISTRY["result_pattern"].result_predicate({"pattern": ".2.", "of": "result"})
    assert list(predicate(np.array([20, 120, 925, 12]))) == [True, True, True, False]
