"""The ``mathneuro`` command: math-specific weights (MathNeuro), their masks per K, and prune/scale evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import options
from .progress import progress_bar


def parse_ks(text: str | None) -> list[float]:
    from ..analysis.mathneuro import DEFAULT_KS

    if not text:
        return list(DEFAULT_KS)
    try:
        ks = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--top-k {text!r}: write fractions like 0.01,0.05") from None
    if not ks or any(not 0 < k <= 1 for k in ks):
        raise InputError(f"--top-k {text!r}: every K must be in (0, 1]")
    return ks


def _mathneuro(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from ..analysis.mathneuro import math_specific, run_mathneuro
    from ..tasks.samples import load_samples

    ks = parse_ks(args.top_k)
    model, store, intervention = options.context(args)
    if (args.math is None or args.general is None) and args.model not in (None, "embedded") \
            and not args.builtin:
        raise InputError("built-in samples fit the embedded model only: give --math FILE and --general FILE "
                         "(or --builtin to use them anyway)")
    samples = load_samples(args.math, args.general, args.samples, args.seed, args.shuffle, args.single_sample,
                           max_single_token=model.max_single_token)
    factor = 0.0 if args.prune else args.scale
    with progress_bar("mathneuro: input norms", args.quiet, unit="sample") as update:
        math_scores, general_scores, table, evaluation = run_mathneuro(
            model, samples, ks, store, factor, intervention, args.seed, args.max_op, args.batch_size, update)
    print(f"MathNeuro on {model.name}: {len(samples.math)} math, {len(samples.general)} non-math samples; "
          f"{len(math_scores)} weight matrices scored")
    print(table.to_string(index=False))
    if evaluation is not None:
        print(f"\nfull-grid accuracy (max_op={args.max_op}) with the selected weights x{factor:g}:")
        print(evaluation.round(4).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in math_scores.items()}, str(out / "importance_math.safetensors"))
        save_file({k: v.contiguous() for k, v in general_scores.items()},
                  str(out / "importance_general.safetensors"))
        for k in ks:
            masks = math_specific(math_scores, general_scores, k)
            save_file({n: m.contiguous() for n, m in masks.items()}, str(out / f"mask_k{k:g}.safetensors"))
        table.to_csv(out / "summary.csv", index=False)
        if evaluation is not None:
            evaluation.to_csv(out / "evaluation.csv", index=False)
        print(f"wrote masks, importance and tables to {out}")
    return 0


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``mathneuro`` to the subparsers ``sub``; ``parents`` holds model, store, grid, intervention, quiet."""
    p = sub.add_parser(
        "mathneuro", parents=[parents[k] for k in ("model", "grid", "intervention", "store", "quiet")],
        help="MathNeuro: math-specific weights (top-K on math data minus top-K on non-math data), masks per K, "
             "and --prune/--scale evaluation beside random and Wanda baselines")
    p.add_argument("--math", default=None, help="math samples: .csv/.jsonl with question,answer or text "
                                                "(default: built-in arithmetic for the embedded model)")
    p.add_argument("--general", default=None, help="non-math samples: .csv/.jsonl with text "
                                                   "(default: the embedded model's language task)")
    p.add_argument("--builtin", action="store_true", help="use the built-in samples on a model other than embedded")
    p.add_argument("--samples", type=int, default=100, help="samples of each kind (default 100)")
    p.add_argument("--single-sample", action="store_true", help="one math and one non-math sample")
    p.add_argument("--top-k", default=None,
                   help="fractions per weight matrix, e.g. 0.01,0.05 (default 0.0001,...,0.15)")
    p.add_argument("--shuffle", action="store_true", help="shuffle file samples (seeded) instead of file order")
    p.add_argument("--seed", type=int, default=0, help="seed for samples and the random baseline")
    p.add_argument("--batch-size", type=int, default=32, help="samples per forward pass")
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--prune", action="store_true", help="evaluate pruning (x0) the math-specific weights")
    edit.add_argument("--scale", type=float, default=None, help="evaluate scaling them by this factor, e.g. 1.1")
    p.add_argument("--out", default=None, help="folder for masks, importance (safetensors) and tables (CSV)")
    p.set_defaults(run=_mathneuro)
