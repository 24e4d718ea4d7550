"""Sweep benchmark: capture overhead vs a plain batched forward pass, a full sweep into the store, and the latency of
reading one neuron's grid back.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--model embedded] [--max-op 100] [--repeats 5]``.
Timings on shared machines are noisy, so the headline figures are ratios measured in this one run, with the
plain forward, the capture and the sweep interleaved (ABCABC...) and compared by their medians.

The plain forward is what the capture is compared with: the same tokenisation, device and batches, only the last
position's logits (``logits_to_keep=1``) reduced to the top-1 token and its probability on the device, as the core
does, no nnsight and nothing else saved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from baseline import plain_forward  # benchmarks/ is the script's folder, first on sys.path

from neurolab.analysis.sweep import NeuronSelection, grid_for, run_sweep
from neurolab.capture.trace import default_batch_size, run
from neurolab.models.loading import load_model
from neurolab.store import Store


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--op", default="+")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--big-max-op", type=int, default=300, help="the larger grid of the read benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_model(args.model, device="cpu")
    grid = grid_for(model, args.op, args.max_op)
    prompts = grid.prompts
    every_layer = dict.fromkeys(range(model.n_layers))
    batch = default_batch_size(model, prompts, model.n_layers * model.d_mlp)
    print(f"model {model.name} ({model.adapter.family}, {model.n_layers} layers x {model.d_mlp} neurons, "
          f"{model.dtype} on {model.device}), {args.op} grid {args.max_op}x{args.max_op}: {len(prompts):,} prompts, "
          f"batches of {batch}, torch threads {torch.get_num_threads()}")

    plain_forward(model, prompts, batch)  # warm-up of both paths
    run(model, prompts, layers=every_layer, batch_size=batch)
    plain, capture, sweep = [], [], []
    full = NeuronSelection("all")
    with tempfile.TemporaryDirectory() as tmp:
        sweep_bytes = sweep_values = 0
        for i in range(args.repeats):
            plain.append(timed(lambda: plain_forward(model, prompts, batch)))
            capture.append(timed(lambda: run(model, prompts, layers=every_layer, batch_size=batch)))
            store = Store(Path(tmp) / f"s{i}.duckdb")
            outcome = {}

            def full_sweep(store=store, outcome=outcome) -> None:
                outcome["result"] = run_sweep(model, store, args.op, full, max_op=args.max_op, chunk_size=batch)

            sweep.append(timed(full_sweep))
            result = outcome["result"]
            sweep_bytes = store.disk_bytes(result.sweep_id)
            sweep_values = result.n_prompts * sum(len(ns) for ns in result.neurons.values())
            store.close()
        p, c, s = statistics.median(plain), statistics.median(capture), statistics.median(sweep)
        print(f"plain batched forward             {p * 1000:8.1f} ms (median of {args.repeats})")
        print(f"capture, every layer's neurons    {c * 1000:8.1f} ms   ratio {c / p:.3f}x  (target <= 1.10x)")
        print(f"full sweep into the store         {s * 1000:8.1f} ms   ratio {s / p:.3f}x  "
              f"({sweep_values:,} values, {sweep_bytes / sweep_values:.3f} bytes/value)")

        layer = model.n_layers - 1
        for max_op in (args.max_op, args.big_max_op):
            store = Store(Path(tmp) / f"read{max_op}.duckdb")
            result = run_sweep(model, store, args.op, NeuronSelection("all", layers=(layer,)), max_op=max_op)
            values = result.n_prompts * len(result.neurons[layer])
            rng = np.random.default_rng(0)
            neurons = rng.choice(model.d_mlp, size=min(100, model.d_mlp), replace=False)
            store.neuron_map(result.sweep_id, layer, 0)  # open the connection, as the running dashboard has it
            times = [timed(lambda n=n: store.neuron_map(result.sweep_id, layer, int(n))) for n in neurons]
            print(f"read one neuron's {max_op}x{max_op} grid ({result.n_prompts:,} prompts, layer {layer}): median "
                  f"{statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms over {len(times)} "
                  f"neurons (target <= 50 ms); store {store.disk_bytes(result.sweep_id) / values:.3f} bytes/value")
            store.close()


if __name__ == "__main__":
    main()
