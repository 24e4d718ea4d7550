"""Anatomy benchmark: the shape of every neuron of a 512-neuron layer over the 10,000-prompt ``+`` grid.

Run: ``.venv/bin/python benchmarks/bench_anatomy.py [--neurons 512] [--max-op 100] [--repeats 5] [--store FILE]``.
Times, median of --repeats: the shape table (variance explained by every key, additive fit, active share, labels;
the part the issue asks under a second), the whole anatomy table (plus line spectra, residue AUROCs for every
(quantity, period), the 2-D DFT and the number-line periods), and the helix fit of every neuron. Maps are synthetic:
a quarter planted shapes (sum, lookup, operand, mod 10), the rest noise, rounded through float16 as the store keeps
them. With ``--store`` it also times ``Store.layer_maps`` of the embedded model's layer 3 (a sweep of ``+`` with all
neurons stored first, e.g. by ``python -m neurolab anatomy --op +``) and the shape table on those real maps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neurolab.anatomy.helix import fit_helix
from neurolab.anatomy.layer import anatomy_table, shape_table
from neurolab.anatomy.shape import Operands


def synthetic(operands: Operands, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b, r = operands.a, operands.b, operands.r
    plants = [np.exp(-((r - 120) / 8.0) ** 2), ((a % 10 == 6) & (b % 10 == 9)).astype(float),
              ((a >= 50) & (a < 60)).astype(float), np.cos(2 * np.pi * r / 10)]
    maps = rng.normal(size=(n, len(operands)))
    for i in range(0, n, 4):
        maps[i] = plants[i // 4 % len(plants)] + 0.1 * maps[i]
    return maps.astype(np.float16).astype(np.float32)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", default=None, help="a store holding the embedded model's + sweep (all neurons)")
    args = parser.parse_args()
    a, b = np.divmod(np.arange(args.max_op ** 2), args.max_op)
    operands = Operands(a, b, a + b)
    maps = synthetic(operands, args.neurons)
    size = f"{args.neurons} neurons x {len(operands):,} prompts"
    shape = median_time(lambda: shape_table(maps, operands), args.repeats)
    print(f"shape table, {size}: {shape:.3f} s (median of {args.repeats})")
    full = median_time(lambda: anatomy_table(maps, maps, None, operands, args.max_op), max(1, args.repeats // 2))
    print(f"anatomy table (shapes + spectra + separability), {size}: {full:.3f} s")
    helix = median_time(lambda: fit_helix(maps, operands), max(1, args.repeats // 2))
    print(f"helix fit, {size}: {helix:.3f} s")
    if args.store:
        from neurolab.analysis.sweep import find_sweep, grid_for
        from neurolab.models.loading import load_model
        from neurolab.store import Store

        model, store = load_model(), Store(args.store)
        sweep_id = find_sweep(model, store, grid_for(model, "+"))
        neurons = list(range(model.d_mlp))
        read = median_time(lambda: store.layer_maps(sweep_id, 3, neurons), args.repeats)
        real = Operands.from_prompts(store.cached_prompts(sweep_id))
        k = store.layer_maps(sweep_id, 3, neurons)[0]
        real_shape = median_time(lambda: shape_table(k, real), args.repeats)
        print(f"embedded L3: layer_maps {read:.3f} s, shape table {real_shape:.3f} s ({len(neurons)} neurons)")


if __name__ == "__main__":
    main()
