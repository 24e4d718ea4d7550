"""Sweep benchmark: capture overhead vs a plain batched forward pass, and the latency of reading one neuron's grid.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--model embedded] [--max-op 100] [--repeats 5]``.
Timings on shared machines are noisy, so the headline figures are ratios measured in this one run, with the
plain forward and the capture interleaved (ABAB...) and compared by their medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurolab.analysis.sweep import default_chunk_size, run_sweep
from neurolab.capture.trace import run
from neurolab.models.loading import load_model
from neurolab.store import Store
from neurolab.tasks.grid import OperandGrid


def plain_forward(model, prompts: list[str], chunk: int) -> None:
    """What the capture is compared with: the same tokenisation and batches, no nnsight, nothing saved."""
    with torch.no_grad():
        for start in range(0, len(prompts), chunk):
            model.hf(**model.encode(prompts[start:start + chunk])).logits[:, -1].float().cpu()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--op", default="+")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--big-max-op", type=int, default=300, help="grid for the 300x300 read benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_model(args.model)
    grid = grid_for(model, args.op, args.max_op)
    prompts = grid.prompts
    chunk = default_chunk_size(model, model.n_layers)
    print(f"model {model.name} ({model.adapter.family}, {model.n_layers} layers x {model.d_mlp} neurons), "
          f"{args.op} grid {args.max_op}x{args.max_op}: {len(prompts):,} prompts, chunks of {chunk}, "
          f"torch threads {torch.get_num_threads()}")

    plain_forward(model, prompts, chunk)  # warm-up both paths
    run(model, prompts, layers=None, batch_size=chunk)
    plain, capture, sweep = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            plain.append(timed(lambda: plain_forward(model, prompts, chunk)))
            capture.append(timed(lambda: run(model, prompts, layers=None, batch_size=chunk)))
            store = Store(Path(tmp) / f"s{i}.duckdb")
            sweep.append(timed(lambda: run_sweep(model, store, args.op, max_op=args.max_op, chunk_size=chunk)))
            store.close()
        p, c, s = statistics.median(plain), statistics.median(capture), statistics.median(sweep)
        print(f"plain batched forward            {p * 1000:8.1f} ms (median of {args.repeats})")
        print(f"capture, every layer's neurons   {c * 1000:8.1f} ms   ratio {c / p:.3f}x  (target <= 1.10x)")
        print(f"full sweep into DuckDB (K, KV)   {s * 1000:8.1f} ms   ratio {s / p:.3f}x")

        for max_op in (args.max_op, args.big_max_op):
            store = Store(Path(tmp) / f"read{max_op}.duckdb")
            layer = model.n_layers - 1
            result = run_sweep(model, store, args.op, layers=[layer], max_op=max_op)
            rng = np.random.default_rng(0)
            neurons = rng.choice(model.d_mlp, size=min(100, model.d_mlp), replace=False)
            store.neuron_map(result.sweep_id, layer, 0)  # open the connection, as the running dashboard has it
            times = [timed(lambda n=n: store.neuron_map(result.sweep_id, layer, int(n))) for n in neurons]
            print(f"read one neuron's {max_op}x{max_op} grid ({result.n_prompts:,} prompts): median "
                  f"{statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms over {len(times)} "
                  f"neurons (target <= 50 ms)")
            store.close()


if __name__ == "__main__":
    main()
