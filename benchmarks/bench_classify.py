"""Classifier benchmark: the vectorised :func:`classify` against the per-neuron, per-heuristic loop reference
(``tests/heuristics_reference.py``, so run it from a checkout).

Run: ``.venv/bin/python benchmarks/bench_classify.py [--ops + - * /] [--neurons 512] [--max-op 100] [--bottom]``.
Synthetic maps: a quarter of the neurons fire on a planted heuristic (some negatively), a few are constant, the rest
are Gaussian noise. Both implementations must give the same rows (the same matched (neuron, heuristic) set, scores
within 1e-9); the speed ratio is measured in this one run (vectorised: median of --repeats, reference: once).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout: neurolab, and tests/ for the reference
from neurolab.heuristics import classify, matches, static_heuristics
from neurolab.tasks.arithmetic import answer, valid_pairs
from tests.heuristics_reference import classify_reference

PLANTS = {  # when a planted neuron fires
    "op1=3mod7": lambda op1, op2, result: op1 % 7 == 3,
    "op2 in [20,30)": lambda op1, op2, result: (20 <= op2) & (op2 < 30),
    "result ends in 7": lambda op1, op2, result: result % 10 == 7,
    "op1==op2": lambda op1, op2, result: op1 == op2,
    "result in [40,50)": lambda op1, op2, result: (40 <= result) & (result < 50),
    "both operands even": lambda op1, op2, result: (op1 % 2 == 0) & (op2 % 2 == 0),
    "result in {1,2,3}": lambda op1, op2, result: np.isin(result, [1, 2, 3]),
}
N_CONSTANT = 4


def synthetic_maps(op1: np.ndarray, op2: np.ndarray, result: np.ndarray, n_neurons: int,
                   seed: int) -> tuple[np.ndarray, dict[int, str]]:
    """Noise everywhere; every 4th neuron plus a planted heuristic (every other one negative); the last few constant.
    Also which plant each planted neuron has."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n_neurons, len(op1)))
    plants = {}
    for i in range(0, n_neurons - N_CONSTANT, 4):
        name = list(PLANTS)[i // 4 % len(PLANTS)]
        sign = -1.0 if i % 8 == 4 else 1.0
        maps[i] = sign * PLANTS[name](op1, op2, result) + 0.1 * maps[i]
        plants[i] = f"{name} ({'negative' if sign < 0 else 'positive'})"
    maps[-N_CONSTANT:] = rng.normal(size=(N_CONSTANT, 1))
    return maps, plants


def timed(fn) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    frame = fn()
    return time.perf_counter() - start, frame


def same_rows(fast: pd.DataFrame, slow: pd.DataFrame) -> str:
    """Empty when both give the same rows; else what differs."""
    key = ["neuron", "heuristic"]
    matched = [set(map(tuple, f.loc[f["matched"], key].values)) for f in (fast, slow)]
    if matched[0] != matched[1]:
        return f"matched sets differ: {len(matched[0] ^ matched[1])} (neuron, heuristic) pairs"
    try:
        pd.testing.assert_frame_equal(fast, slow, check_exact=False, atol=1e-9, rtol=0)
    except AssertionError as error:
        return str(error)
    return ""


def bench(op: str, args: argparse.Namespace) -> bool:
    pairs = np.array(valid_pairs(op, args.max_op, args.max_single_token))
    op1, op2 = pairs[:, 0], pairs[:, 1]
    result = np.array([answer(a, op, b) for a, b in pairs])
    maps, plants = synthetic_maps(op1, op2, result, args.neurons, args.seed)
    kv_maps = maps * np.random.default_rng(args.seed + 1).uniform(0.5, 1.5, size=maps.shape)
    kv_maps[-N_CONSTANT:] = maps[-N_CONSTANT:]  # constant on both maps
    call = dict(kv_maps=kv_maps, mode=args.mode, bottom=args.bottom, seed=args.seed)
    grid = (maps, op, op1, op2, result, args.max_op, args.max_single_token)
    n_static = len(static_heuristics(op, op1, op2, result, args.max_op, args.max_single_token))
    print(f"\n{op} grid max_op={args.max_op}, max_single_token={args.max_single_token}: {len(op1):,} prompts, "
          f"{args.neurons} neurons, {n_static} data-independent heuristics, mode {args.mode}, bottom={args.bottom}")

    classify(*grid, **call)  # warm-up
    fast_times = []
    for _ in range(args.repeats):
        elapsed, fast = timed(lambda: classify(*grid, **call))
        fast_times.append(elapsed)
    tracemalloc.start()
    classify(*grid, **call)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    slow_time, slow = timed(lambda: classify_reference(*grid, **call))

    found = matches(fast)
    constant = set(range(args.neurons - N_CONSTANT, args.neurons))
    noise = found[~found["neuron"].isin(set(plants) | constant)]
    by_plant = pd.Series(plants)
    recovered = by_plant.groupby(by_plant).agg(lambda s: f"{s.index.isin(found['neuron']).sum()}/{len(s)}")
    print(f"rows {len(fast):,}; matched {len(found):,} (neuron, heuristic) pairs")
    print("planted neurons with a match: " + ", ".join(f"{name} {count}" for name, count in recovered.items()))
    print(f"constant neurons with rows: {fast['neuron'].isin(constant).sum()}; noise neurons with a match: "
          f"{noise['neuron'].nunique()} of {args.neurons - len(plants) - N_CONSTANT}"
          + (f" (least base rate among their matches: {noise['base_rate'].min():.2f})" if len(noise) else ""))
    fast_median = statistics.median(fast_times)
    print(f"vectorised classify: median {fast_median:.3f} s of {args.repeats} "
          f"({', '.join(f'{t:.3f}' for t in fast_times)}), peak traced memory {peak / 2 ** 20:.0f} MiB")
    print(f"loop reference:      {slow_time:.3f} s")
    print(f"speed-up (reference / vectorised, this run): {slow_time / fast_median:.1f}x")
    problem = same_rows(fast, slow)
    print("same rows: matched sets equal, every score within 1e-9" if not problem else f"MISMATCH: {problem}")
    return not problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=["+"], choices=["+", "-", "*", "/"])
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--max-single-token", type=int, default=999)
    parser.add_argument("--mode", default="K", choices=["K", "KV", "hybrid"])
    parser.add_argument("--bottom", action="store_true", help="also score the bottom-k (gated models)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    passed = [bench(op, args) for op in args.ops]  # every operator, even after a mismatch
    if not all(passed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
