"""MathNeuro's pruning frontier on the embedded model, on held-out facts (issue 23; first searched in issue 15).

The frontier: the largest math drop (mean accuracy over the four operators) from pruning the math-specific weights
— top-K(math) AND NOT top-K_general(non-math), per matrix — while the non-math accuracy stays within
``--tolerance`` (0.05) of clean. Non-math accuracy is measured on the language task's held-out facts, which are never
non-math samples (:func:`neurolab.tasks.splits.language_split`); the sample half's accuracy (the facts that can be
protected) is printed beside it, which is what issue 15's -0.42 was measured on.

The logic is the core's :func:`neurolab.analysis.mathneuro_claims.frontier` (also ``python -m neurolab
mathneuro-study frontier`` and the MathNeuro page); this script runs it for two data choices (the published 100
math / 100 non-math samples, and issue 15's best: 1,000 math samples and every fact of the sample half) over K x
K_general, on a seeded subset of each grid (``--prompts`` per operator), then re-evaluates each choice's best point
and its random control (as many random weights per matrix) on the full grids. Every evaluation is cached in the
store (``--store``, default a temporary folder), so a rerun with the same store computes nothing.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/mathneuro_frontier.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from neurolab.analysis import mathneuro as mn
from neurolab.analysis import mathneuro_claims as claims
from neurolab.models.loading import load_model
from neurolab.store import Store
from neurolab.tasks.samples import load_samples

KS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08)
K_GENERALS = (None, 0.05, 0.08, 0.1)
CHOICES = {"math 100 / non-math 100 (published)": (100, 100), "math 1000 / non-math 118 (every sample fact)":
           (1000, 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tolerance", type=float, default=0.05, help="non-math may fall this far below clean")
    parser.add_argument("--prompts", type=int, default=500, help="seeded prompts per operator grid for the search")
    parser.add_argument("--store", default=None, help="store path (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_model("embedded", device="cpu")
    tmp = tempfile.TemporaryDirectory()
    store = Store(args.store or f"{tmp.name}/frontier.duckdb")
    start = time.perf_counter()
    header = ("| data | K | K-general | weights | math (drop) | non-math held-out (change) | sample half (change) |\n"
              "|---|---|---|---|---|---|---|")
    full_rows = []
    for label, (n_math, n_general) in CHOICES.items():
        samples = load_samples(n=n_math, seed=args.seed, n_general=n_general, max_single_token=model.max_single_token)
        table = claims.frontier(model, samples, KS, K_GENERALS, store, args.prompts, args.tolerance)
        print(f"\n## {label}: {args.prompts} prompts per operator grid ({time.perf_counter() - start:.0f} s)\n")
        print(table.round(3).to_string(index=False))
        best = claims.frontier_best(table)
        if best is None:
            print(f"no (K, K-general) keeps non-math within {args.tolerance:g}")
            continue
        masks = mn.math_specific(*mn.scores_for(model, samples, store), best["k"], best["k_general"])
        clean = claims.pruned_accuracy(model, None, 0, store)
        for name, chosen in (("frontier", masks), ("random control", mn.random_masks(masks, args.seed))):
            after = claims.pruned_accuracy(model, mn.edit(chosen, 0.0, name, "frontier"), 0, store)
            full_rows.append(
                f"| {label}, {name} | {best['k']:g} | {best['k_general']:g} | {mn.mask_counts(chosen):,} | "
                f"{after['math']:.3f} ({after['math'] - clean['math']:+.3f}) | {after['nonmath']:.3f} "
                f"({after['nonmath'] - clean['nonmath']:+.3f}) | {after['nonmath_samples_half']:.3f} "
                f"({after['nonmath_samples_half'] - clean['nonmath_samples_half']:+.3f}) |")
    print(f"\n# On the full grids ({time.perf_counter() - start:.0f} s in all; tolerance {args.tolerance:g})\n")
    print(header)
    print("\n".join(full_rows))


if __name__ == "__main__":
    main()
