"""GPU benchmark at Pythia-6.9B's shape: capture and sweep overhead against a plain forward pass, store size, and the
latency of reading one neuron's map.

Run: ``.venv/bin/python benchmarks/bench_gpu.py [--max-op 300] [--folder DIR] [--repeats 1]``. Without CUDA it
prints a line and exits 0. It builds a randomly initialised GPT-NeoX of Pythia-6.9B's shape (hidden 4096, 32 layers,
32 heads, intermediate 16384, vocab 50432, rotary_pct 0.25) in bf16 directly on the GPU, with the embedded model's
tokenizer (its ~1,400 ids are all valid in the larger vocabulary), saves it as safetensors into a temporary folder
(or ``--folder``, reused when it already holds a model) and loads it back through ``load_model`` like any model.

On the ``--op`` grid (300x300: 90,000 prompts) it measures in one run, the first two interleaved (ABAB) over
``--repeats`` and compared by their medians:

* the plain forward pass of the grid (``logits_to_keep=1``, top-1 and its probability reduced on the device) in the
  capture's batches: the baseline;
* the capture of every neuron of every layer (``stream``, float16 to the host, a callback that does nothing);
* a top-N-per-layer sweep end to end into a fresh store (the answers pass, the importance run, the neurons pass and
  the store writes), with its phases, and the store's size on disk;
* one neuron's map read back from the store (median over ``--read-neurons`` stored neurons).

Random weights answer no prompt correctly, and the importance run ranks neurons on correct prompts only: when no
prompt is correct the benchmark lets it rank on all of them (the computation, and so its cost, is the same).

Try it small: ``--hidden 64 --layers 2 --d-mlp 256 --max-op 30 --allow-cpu`` runs the same code on the CPU.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from baseline import plain_forward  # benchmarks/ is the script's folder, first on sys.path

from neurolab import paths
from neurolab.analysis import importance
from neurolab.analysis.sweep import NeuronSelection, grid_for, run_sweep
from neurolab.capture.trace import default_batch_size, stream
from neurolab.models.loading import load_model
from neurolab.store import Store

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TARGETS = {"capture": 1.2, "sweep": 2.0, "store_gb": 1.5, "read_ms": 20.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(folder: Path, args: argparse.Namespace, device: str) -> None:
    """A randomly initialised GPT-NeoX of the asked-for shape, made in its dtype on ``device`` and saved to
    ``folder`` as safetensors with the embedded model's tokenizer."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    embedded = paths.embedded_model_dir()
    tokenizer_config = GPTNeoXConfig.from_pretrained(embedded)
    heads = args.heads or max(1, args.hidden // 128)
    config = GPTNeoXConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=heads,
        intermediate_size=args.d_mlp, rotary_pct=args.rotary_pct, max_position_embeddings=2048,
        use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu",
        bos_token_id=tokenizer_config.bos_token_id, eos_token_id=tokenizer_config.eos_token_id,
        pad_token_id=tokenizer_config.pad_token_id,
    )
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        hf = GPTNeoXForCausalLM._from_config(config, dtype=dtype)
    hf.eval()
    sync(torch.device(device))
    made = time.perf_counter() - start
    n_params = sum(p.numel() for p in hf.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (embedded / name).exists():
            shutil.copy(embedded / name, folder / name)
    print(f"built {n_params / 1e9:.2f}B parameters ({args.dtype}, {heads} heads) on {device} in {made:.1f} s, "
          f"saved to {folder} in {time.perf_counter() - start - made:.1f} s", flush=True)
    del hf
    if device == "cuda":
        torch.cuda.empty_cache()


def capture_all(model, prompts: list[str], batch: int) -> None:
    """Every neuron of every layer, float16 to the host; the callback drops it."""
    stream(model, prompts, lambda lo, hi, chunk: None, layers=dict.fromkeys(range(model.n_layers)), half=True,
           batch_size=batch)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Phases:
    """Times a top-N sweep's phases from its progress calls: the answers pass runs 0 -> total, then the importance
    run and the blocks' creation (no progress), then the neurons pass starts again from 0."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.calls: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        self.calls.append((time.perf_counter(), done))

    def split(self, end: float) -> dict[str, float] | None:
        restarts = [i for i in range(1, len(self.calls)) if self.calls[i][1] < self.calls[i - 1][1]]
        if len(restarts) != 1:
            return None
        answers_end = self.calls[restarts[0] - 1][0]
        neurons_start = self.calls[restarts[0]][0]
        return {"answers pass": answers_end - self.start, "importance + blocks": neurons_start - answers_end,
                "neurons pass + writes": end - neurons_start}


def rank_on_all_prompts_when_none_is_correct() -> list[str]:
    """Random weights answer nothing correctly; let the importance run take its prompts as if all were correct
    (the same attribution cost, without probing the whole grid for a correct prompt that does not exist)."""
    original = importance.prompt_pairs
    notes = ["random weights: importance prompts taken as if answered correctly"]

    def prompt_pairs(model, grid, n_prompts=50, seed=0, correct=None, intervention=None):
        return original(model, grid, n_prompts, seed, np.ones(len(grid), dtype=bool), intervention)

    importance.prompt_pairs = prompt_pairs
    return notes


def folder_bytes(store: Store) -> int:
    files = [store.path, *store.path.parent.glob(store.path.name + ".wal")]
    return sum(f.stat().st_size for f in files if f.exists()) + sum(
        f.stat().st_size for f in store.values_dir.rglob("*") if f.is_file())


def verdict(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=None, help="default: hidden / 128 (32 at Pythia-6.9B's shape)")
    parser.add_argument("--d-mlp", type=int, default=16384, help="intermediate size (neurons per layer)")
    parser.add_argument("--vocab", type=int, default=50432)
    parser.add_argument("--rotary-pct", type=float, default=0.25)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--op", default="+")
    parser.add_argument("--max-op", type=int, default=300)
    parser.add_argument("--top-n", type=int, default=200, help="neurons per layer of the top-N sweep")
    parser.add_argument("--read-neurons", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="plain/capture pairs (ABAB), compared by medians")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="prompts per batch of the plain pass and the capture (default: the capture's own)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the model is saved (reused when it holds a config.json); default: a temp folder")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp model folder and store go")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU (to test the script at a tiny shape)")
    args = parser.parse_args()

    if torch.cuda.is_available():
        device = "cuda"
    elif args.allow_cpu:
        device = "cpu"
    else:
        print("bench_gpu: torch sees no CUDA GPU here; skipped (--allow-cpu runs it on the CPU at a tiny shape)")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="bench_gpu-", dir=args.tmp_dir))
    try:
        folder = args.folder or scratch / "model"
        if (folder / "config.json").exists():
            print(f"reusing the model in {folder}", flush=True)
        else:
            build_model(folder, args, device)
        start = time.perf_counter()
        model = load_model(str(folder), device=device, dtype=args.dtype)
        print(f"loaded through load_model in {time.perf_counter() - start:.1f} s: {model.n_layers} layers x "
              f"{model.d_mlp} neurons, {model.dtype} on {model.device}", flush=True)
        return measure(model, args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(model, args: argparse.Namespace, scratch: Path) -> int:
    dev = model.device
    grid = grid_for(model, args.op, args.max_op)
    prompts = grid.prompts
    batch = args.batch_size or default_batch_size(model, prompts, model.n_layers * model.d_mlp)
    print(f"{args.op} grid {args.max_op}x{args.max_op}: {len(prompts):,} prompts, batches of {batch} "
          f"({-(-len(prompts) // batch)} per pass)", flush=True)

    warm = prompts[: min(len(prompts), 2 * batch)]
    plain_forward(model, warm, batch)
    capture_all(model, warm, batch)
    plain, capture = [], []
    for i in range(args.repeats):
        plain.append(timed(lambda: plain_forward(model, prompts, batch), dev))
        capture.append(timed(lambda: capture_all(model, prompts, batch), dev))
        print(f"repeat {i + 1}: plain {plain[-1]:.2f} s, capture {capture[-1]:.2f} s", flush=True)
    p, c = statistics.median(plain), statistics.median(capture)

    notes = rank_on_all_prompts_when_none_is_correct()
    store = Store(scratch / "store" / "bench.duckdb")
    phases = Phases()
    sync(dev)
    phases.start = time.perf_counter()
    result = run_sweep(model, store, args.op, NeuronSelection("top", top_n=args.top_n), max_op=args.max_op,
                       progress=phases)
    sync(dev)
    end = time.perf_counter()
    s = end - phases.start
    split = phases.split(end)
    values = result.n_prompts * sum(len(ns) for ns in result.neurons.values())
    value_bytes = store.disk_bytes(result.sweep_id)
    total_bytes = folder_bytes(store)

    rng = np.random.default_rng(0)
    stored = [(layer, n) for layer, ns in result.neurons.items() for n in ns]
    picks = [stored[i] for i in rng.choice(len(stored), size=min(args.read_neurons, len(stored)), replace=False)]
    store.neuron_map(result.sweep_id, *picks[0])  # the connection open, as the running dashboard has it
    reads = []
    for layer, n in picks:
        start = time.perf_counter()
        k, kv = store.neuron_map(result.sweep_id, layer, n)
        reads.append(time.perf_counter() - start)
        assert len(k) == len(kv) == result.n_prompts
    read_ms = statistics.median(reads) * 1000
    store.close()

    gb = total_bytes / 1e9
    shape = (f"{model.n_layers} layers x {model.d_mlp} neurons, {model.dtype} on "
             f"{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}")
    print()
    print(f"### bench_gpu: {shape}; {args.op} grid {args.max_op}x{args.max_op} ({len(prompts):,} prompts)")
    print()
    print("| measurement | time / value | ratio to plain | target | met |")
    print("|---|---|---|---|---|")
    print(f"| plain forward, batches of {batch} (median of {args.repeats}) | {p:.2f} s | 1.00x | baseline | |")
    print(f"| capture all {model.n_layers * model.d_mlp:,} neurons (stream, half) | {c:.2f} s | {c / p:.2f}x | "
          f"<= {TARGETS['capture']}x | {verdict(c / p, TARGETS['capture'])} |")
    print(f"| top-{args.top_n} sweep end to end into the store | {s:.2f} s | {s / p:.2f}x | <= {TARGETS['sweep']}x | "
          f"{verdict(s / p, TARGETS['sweep'])} |")
    for name, seconds in (split or {}).items():
        print(f"| &nbsp;&nbsp;{name} | {seconds:.2f} s | {seconds / p:.2f}x | | |")
    print(f"| store size ({values:,} values; blocks {value_bytes / 1e9:.3f} GB, "
          f"{value_bytes / values:.3f} B/value) | {gb:.3f} GB | | <= {TARGETS['store_gb']} GB | "
          f"{verdict(gb, TARGETS['store_gb'])} |")
    print(f"| one neuron's map read (median of {len(reads)}, max {max(reads) * 1000:.2f} ms) | {read_ms:.2f} ms | | "
          f"<= {TARGETS['read_ms']:.0f} ms | {verdict(read_ms, TARGETS['read_ms'])} |")
    for note in dict.fromkeys(notes):
        print(f"\nNote: {note}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
