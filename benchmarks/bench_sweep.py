"""Sweep benchmark: the capture of every neuron against a plain forward pass of the same kind, a full sweep into the
store, and the latency of reading one neuron's grid back.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--model embedded] [--max-op 100] [--repeats 5] [--json]``.
Timings on shared machines are noisy, so the headline figures are ratios measured in this one run, with every path
interleaved (ABCDE ABCDE ...) and compared by their medians.

The capture has two paths (``neurolab.capture.trace.run``), and each is compared with a plain Hugging Face forward
pass that does the same work without nnsight and without saving anything, top-1 and its probability reduced on the
device in both:

- **plain**: ``run(..., share_prefix=False)`` against ``baseline.plain_forward``: the same tokenisation, device and
  batches, last-position logits only (``logits_to_keep=1``);
- **shared prefix**: ``run(..., share_prefix=True)`` (what sweeps use) against :func:`shared_forward`: the same
  split (``neurolab.capture.prefix``), the distinct prefixes' KV cache computed once with ``use_cache=True``, then
  each batch of suffixes continuing it (``SharedPrefix.suffix_inputs``), last-position logits only.

Comparing the shared capture with the plain forward would measure the sharing, not the capture: both ratios are
reported, and the sharing's own speed-up separately. The read benchmark times ``load_neuron_map`` (what the Operand
Grid page calls, K and KV apart) and ``Store.neuron_map`` over 100 neurons of a stored layer, after a first read of
the sweep (reported on its own: it reads the sweep's index and prompt rows from DuckDB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from baseline import plain_forward  # benchmarks/ is the script's folder, first on sys.path

from neurolab.analysis.neuron_maps import load_neuron_map
from neurolab.analysis.sweep import NeuronSelection, grid_for, run_sweep
from neurolab.capture.prefix import split_shared_prefix
from neurolab.capture.trace import default_batch_size, run
from neurolab.models.loading import load_model
from neurolab.store import Store


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def shared_forward(model, prompts: list[str], batch: int) -> np.ndarray:
    """The prefix-shared pass in plain Hugging Face calls: the distinct prefixes once (their KV cache), then the
    suffixes in batches continuing it, last-position logits only, top-1 and its probability reduced on the device.
    Falls back to the plain pass exactly when the capture does (no split, or more prefixes than a batch)."""
    plan = split_shared_prefix(model.tokenizer, prompts)
    if plan is None or len(plan.prefixes) > batch:
        plain_forward(model, prompts, batch)
        return np.empty(0, np.int64)
    device = model.device
    tops = []
    with torch.no_grad():
        prefixes = plan.prefixes.to(device)
        positions = torch.arange(plan.prefix_length, device=device).expand_as(prefixes)
        cache = model.hf(input_ids=prefixes, attention_mask=torch.ones_like(prefixes), position_ids=positions,
                         use_cache=True, logits_to_keep=1).past_key_values
        for lo in range(0, len(prompts), batch):
            hi = min(len(prompts), lo + batch)
            logits = model.hf(**plan.suffix_inputs(lo, hi, cache, device), logits_to_keep=1).logits[:, -1]
            prob, top = logits.float().softmax(-1).max(-1)
            tops.append(top.cpu())
            prob.cpu()
    return torch.cat(tops).numpy()


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--op", default="+")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--big-max-op", type=int, default=300, help="the larger grid of the read benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reads", type=int, default=100, help="neurons read per grid in the read benchmark")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (and nothing else)")
    args = parser.parse_args()
    say = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print

    model = load_model(args.model, device="cpu")
    grid = grid_for(model, args.op, args.max_op)
    prompts = grid.prompts
    every_layer = dict.fromkeys(range(model.n_layers))
    batch = default_batch_size(model, prompts, model.n_layers * model.d_mlp)
    figures: dict = {"model": model.name, "family": model.adapter.family, "dtype": str(model.dtype),
                     "device": str(model.device), "op": args.op, "max_op": args.max_op, "prompts": len(prompts),
                     "batch": batch, "repeats": args.repeats, "torch_threads": torch.get_num_threads()}
    say(f"model {model.name} ({model.adapter.family}, {model.n_layers} layers x {model.d_mlp} neurons, "
        f"{model.dtype} on {model.device}), {args.op} grid {args.max_op}x{args.max_op}: {len(prompts):,} prompts, "
        f"batches of {batch}, torch threads {torch.get_num_threads()}")

    # warm-up of every path (and the shared split's tokenisation cache, which the sweep's pass uses too), with a
    # check that the plain shared pass computes what the capture does
    plain_forward(model, prompts, batch)
    run(model, prompts, layers=every_layer, batch_size=batch, share_prefix=False)
    shared_top = shared_forward(model, prompts, batch)
    captured_top = run(model, prompts, layers=every_layer, batch_size=batch, share_prefix=True).top1
    figures["shared_split"] = bool(len(shared_top))
    if len(shared_top):
        figures["shared_forward_top1_agreement"] = float(np.mean(shared_top == captured_top))

    paths = {
        "plain_forward": lambda: plain_forward(model, prompts, batch),
        "plain_capture": lambda: run(model, prompts, layers=every_layer, batch_size=batch, share_prefix=False),
        "shared_forward": lambda: shared_forward(model, prompts, batch),
        "shared_capture": lambda: run(model, prompts, layers=every_layer, batch_size=batch, share_prefix=True),
    }
    times: dict[str, list[float]] = {name: [] for name in [*paths, "sweep"]}
    full = NeuronSelection("all")
    with tempfile.TemporaryDirectory() as tmp:
        sweep_bytes = sweep_values = 0
        for i in range(args.repeats):
            for name, fn in paths.items():
                times[name].append(timed(fn))
            store = Store(Path(tmp) / f"s{i}.duckdb")
            outcome = {}

            def full_sweep(store=store, outcome=outcome) -> None:
                outcome["result"] = run_sweep(model, store, args.op, full, max_op=args.max_op, chunk_size=batch)

            times["sweep"].append(timed(full_sweep))
            result = outcome["result"]
            sweep_bytes = store.disk_bytes(result.sweep_id)
            sweep_values = result.n_prompts * sum(len(ns) for ns in result.neurons.values())
            store.close()
        med = {name: median_ms(t) for name, t in times.items()}
        figures.update({f"{name}_ms": round(m, 2) for name, m in med.items()})
        figures["plain_capture_ratio"] = round(med["plain_capture"] / med["plain_forward"], 3)
        figures["shared_capture_ratio"] = round(med["shared_capture"] / med["shared_forward"], 3)
        figures["sharing_speedup"] = round(med["plain_forward"] / med["shared_forward"], 3)
        figures["sweep_over_shared_forward"] = round(med["sweep"] / med["shared_forward"], 3)
        figures["sweep_over_plain_forward"] = round(med["sweep"] / med["plain_forward"], 3)
        figures["sweep_values"] = sweep_values
        figures["sweep_bytes_per_value"] = round(sweep_bytes / sweep_values, 3)
        n = args.repeats
        say(f"plain batched forward (HF)             {med['plain_forward']:8.1f} ms (median of {n})")
        say(f"capture, plain path (share_prefix off) {med['plain_capture']:8.1f} ms   "
            f"ratio {figures['plain_capture_ratio']:.3f}x over the plain forward  (target <= 1.10x)")
        say(f"prefix-shared forward (HF, KV cache)   {med['shared_forward']:8.1f} ms   "
            f"sharing speed-up {figures['sharing_speedup']:.2f}x (plain forward / shared forward)"
            + ("" if figures["shared_split"] else "  (no shared prefix: plain pass)"))
        say(f"capture, shared path (share_prefix on) {med['shared_capture']:8.1f} ms   "
            f"ratio {figures['shared_capture_ratio']:.3f}x over the shared forward  (target <= 1.10x)")
        say(f"full sweep into the store (shared)     {med['sweep']:8.1f} ms   "
            f"ratio {figures['sweep_over_shared_forward']:.3f}x over the shared forward, "
            f"{figures['sweep_over_plain_forward']:.3f}x over the plain forward  "
            f"({sweep_values:,} values, {figures['sweep_bytes_per_value']:.3f} bytes/value)")

        layer = model.n_layers - 1
        figures["reads"] = {}
        for max_op in (args.max_op, args.big_max_op):
            store = Store(Path(tmp) / f"read{max_op}.duckdb")
            result = run_sweep(model, store, args.op, NeuronSelection("all", layers=(layer,)), max_op=max_op)
            values = result.n_prompts * len(result.neurons[layer])
            rng = np.random.default_rng(0)
            neurons = [int(n) for n in rng.choice(model.d_mlp, size=min(args.reads, model.d_mlp), replace=False)]
            store.close()  # the first read opens the connection and reads the sweep's index and prompt rows
            first = timed(lambda: load_neuron_map(store, result.sweep_id, layer, model.d_mlp - 1, "K"))
            reads: dict[str, list[float]] = {"K": [], "KV": [], "store": []}
            for n in neurons:  # interleaved: K, KV, then the store's raw read, neuron after neuron
                for kind in ("K", "KV"):
                    reads[kind].append(timed(lambda n=n, kind=kind: load_neuron_map(store, result.sweep_id, layer,
                                                                                       n, kind)))
                reads["store"].append(timed(lambda n=n: store.neuron_map(result.sweep_id, layer, n)))
            entry = {"prompts": result.n_prompts, "layer": layer, "neurons": len(neurons),
                     "first_read_ms": round(first * 1000, 2),
                     "bytes_per_value": round(store.disk_bytes(result.sweep_id) / values, 3)}
            for kind, label in (("K", "k"), ("KV", "kv"), ("store", "store_neuron_map")):
                entry[f"{label}_median_ms"] = round(median_ms(reads[kind]), 3)
                entry[f"{label}_max_ms"] = round(max(reads[kind]) * 1000, 3)
            figures["reads"][f"{max_op}x{max_op}"] = entry
            say(f"read one neuron's {max_op}x{max_op} grid ({result.n_prompts:,} prompts, layer {layer}, "
                f"{len(neurons)} neurons, target <= 5 ms median): K median {entry['k_median_ms']:.2f} ms, max "
                f"{entry['k_max_ms']:.2f} ms; KV median {entry['kv_median_ms']:.2f} ms, max {entry['kv_max_ms']:.2f} "
                f"ms; Store.neuron_map (K and KV) median {entry['store_neuron_map_median_ms']:.2f} ms, max "
                f"{entry['store_neuron_map_max_ms']:.2f} ms; first read of the sweep {entry['first_read_ms']:.1f} "
                f"ms; store {entry['bytes_per_value']:.3f} bytes/value")
            store.close()
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
