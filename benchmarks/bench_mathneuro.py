"""MathNeuro importance benchmark: neurolab's streaming pass against a straightforward per-sample loop of the
published formula, on the same samples.

- streaming: :func:`neurolab.capture.norms.input_norms` (batches, padding masked, one fp32 ``[in]`` accumulator per
  scored weight) then :func:`neurolab.analysis.mathneuro.importance` (``|W|`` applied once at the end);
- reference: one sample per forward pass, plain forward pre-hooks, a full ``[out, in]`` product
  ``|W| * ||X_j||_2`` per Linear per sample, accumulated in fp32 (as ``tests/test_mathneuro.py`` does).

Both score the built-in math samples (``--samples`` of them, operators in turn) and as many non-math facts. Checks:
the math-specific masks (top-K math AND NOT top-K non-math) and the top-K masks of each set are identical — Jaccard
per K, the minimum over matrices — the speed ratio (target >= 5x; median over ``--repeats`` interleaved rounds) and
the peak memory of both. Memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each method); on the
host the peak resident set size above the level just before the method, sampled every 0.5 ms by a thread
(psutil RSS; tracemalloc does not see torch's tensor allocations). RSS counts pages touched, so memory the allocator
frees and reuses within the block counts once; the accumulator sizes of both are printed beside it.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_mathneuro.py [--samples 100] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from neurolab.analysis import mathneuro as mn
from neurolab.capture.norms import input_norms
from neurolab.models.adapters import in_out_features
from neurolab.models.loading import load_model
from neurolab.tasks.samples import load_samples

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout: tests/ holds the reference
from tests.mathneuro_reference import reference_scores

KS = (0.001, 0.01, 0.05)
SPEED_TARGET = 5.0


def streaming_scores(model, modules, texts, batch_size: int) -> dict[str, torch.Tensor]:
    return mn.importance(modules, input_norms(model, modules, texts, batch_size))


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or host RSS high-water above the starting level (sampled)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak = 0

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.high = self.start
        self.running = True

        def sample():
            while self.running:
                self.high = max(self.high, self.process.memory_info().rss)
                time.sleep(0.0005)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.high = max(self.high, self.process.memory_info().rss)
            self.peak = self.high - self.start
        return False


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def min_jaccard(a: dict, b: dict) -> float:
    return min(jaccard(a[n], b[n]) for n in a)


def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=100, help="math samples, and as many non-math")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (median)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    cuda = str(model.device).startswith("cuda")
    modules = mn.scored_weights(model)
    samples = load_samples(n=args.samples, max_single_token=model.max_single_token)
    texts = {"math": list(samples.math), "non-math": list(samples.general)}
    params = sum(m.weight.numel() for m in modules.values())
    print(f"model {model.name} on {model.device}: {len(modules)} scored matrices, {params:,} weights; "
          f"{len(texts['math'])} built-in math samples (e.g. {texts['math'][0]!r}), "
          f"{len(texts['non-math'])} non-math facts (e.g. {texts['non-math'][0]!r}); "
          f"torch threads {torch.get_num_threads()}")

    # warm-up (allocator, kernels), not timed
    streaming_scores(model, modules, texts["math"][:8], args.batch_size)
    reference_scores(model, modules, texts["math"][:8])

    times: dict[str, list[float]] = {"streaming": [], "reference": []}
    peaks: dict[str, int] = {"streaming": 0, "reference": 0}
    scores: dict[str, dict] = {}
    for _ in range(args.repeats):
        for method in ("streaming", "reference"):
            with PeakMemory(cuda) as mem:
                start = time.perf_counter()
                if method == "streaming":
                    out = {k: streaming_scores(model, modules, t, args.batch_size) for k, t in texts.items()}
                else:
                    out = {k: reference_scores(model, modules, t) for k, t in texts.items()}
                if cuda:
                    torch.cuda.synchronize()
                times[method].append(time.perf_counter() - start)
            peaks[method] = max(peaks[method], mem.peak)
            scores[method] = out
            del out

    stream, ref = scores["streaming"], scores["reference"]
    max_rel = max(float(((stream[k][n] - ref[k][n]).abs() / ref[k][n].abs().clamp_min(1e-6)).max())
                  for k in texts for n in modules)
    rows = []
    all_identical = True
    for k in KS:
        spec_s = mn.math_specific(stream["math"], stream["non-math"], k)
        spec_r = mn.math_specific(ref["math"], ref["non-math"], k)
        j_spec = min_jaccard(spec_s, spec_r)
        j_math = min_jaccard(mn.top_k_masks(stream["math"], k), mn.top_k_masks(ref["math"], k))
        j_gen = min_jaccard(mn.top_k_masks(stream["non-math"], k), mn.top_k_masks(ref["non-math"], k))
        identical = all(torch.equal(spec_s[n], spec_r[n]) for n in modules)
        all_identical &= identical
        rows.append((k, j_spec, j_math, j_gen, identical, mn.mask_counts(spec_s)))

    t_s, t_r = statistics.median(times["streaming"]), statistics.median(times["reference"])
    ratio = t_r / t_s
    memory_kind = "torch.cuda.max_memory_allocated" if cuda else "peak host RSS above start (psutil, sampled)"
    print()
    print("| K | math-specific weights | Jaccard math-specific (min over matrices) | Jaccard top-K math | "
          "Jaccard top-K non-math | identical |")
    print("|---|---|---|---|---|---|")
    for k, j_spec, j_math, j_gen, identical, count in rows:
        print(f"| {k:g} | {count:,} | {j_spec:.4f} | {j_math:.4f} | {j_gen:.4f} | {'yes' if identical else 'NO'} |")
    print()
    print(f"| method | median time ({args.repeats} rounds, {2 * args.samples} samples) | peak memory "
          f"({memory_kind}) |")
    print("|---|---|---|")
    print(f"| streaming (neurolab, batch {args.batch_size}) | {t_s:.3f} s | {mib(peaks['streaming'])} |")
    print(f"| per-sample reference (fp32, full [out, in] per sample) | {t_r:.3f} s | {mib(peaks['reference'])} |")
    print(f"| **speed ratio** | **{ratio:.1f}x** (target >= {SPEED_TARGET:g}x: "
          f"{'met' if ratio >= SPEED_TARGET else 'NOT met'}) | |")
    print()
    print(f"max relative difference of the importance scores: {max_rel:.2e}; masks identical at every K: "
          f"{'yes' if all_identical else 'NO'}")
    norm_bytes = sum(4 * in_out_features(m)[0] for m in modules.values())
    print(f"accumulator sizes: streaming {mib(norm_bytes)} "
          f"of [in] norms (+ one [out, in] score per matrix at the end: {mib(4 * params)}), reference "
          f"{mib(4 * params)} of [out, in] totals + an [out, in] temporary per matrix per sample")


if __name__ == "__main__":
    main()
