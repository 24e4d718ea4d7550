"""The ``mathneuro`` command: math-specific weights (MathNeuro), their masks per K, and prune/scale evaluation; and
``mathneuro-study``: its claims tested where they can fail (scaling per condition, single samples, the frontier)."""

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


def parse_factors(text: str) -> list[float]:
    try:
        factors = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--factors {text!r}: write factors like 0.8,1.1,1.5") from None
    if not factors or any(f < 0 for f in factors):
        raise InputError(f"--factors {text!r}: give factors >= 0")
    return factors


def parse_k_generals(text: str | None) -> list[float | None]:
    """``k`` (the same as K, as published) or fractions, comma-separated."""
    if not text:
        return [None]
    try:
        values = [None if part.strip() == "k" else float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--k-generals {text!r}: write 'k' or fractions like k,0.05,0.08") from None
    return [parse_k_general(v) for v in values]


def parse_k_general(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 1:
        raise InputError(f"--k-general {value:g}: give a fraction in (0, 1]")
    return value


def _mathneuro(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from ..analysis.mathneuro import math_specific, run_mathneuro
    from ..tasks.samples import load_samples

    ks = parse_ks(args.top_k)
    k_general = parse_k_general(args.k_general)
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
            model, samples, ks, store, factor, intervention, args.seed, args.max_op, args.batch_size, update,
            k_general=k_general)
    print(f"MathNeuro on {model.name}: {len(samples.math)} math, {len(samples.general)} non-math samples; "
          f"{len(math_scores)} weight matrices scored; non-math top-K "
          f"{'= K' if k_general is None else f'{k_general:g}'}")
    print(table.to_string(index=False))
    if evaluation is not None:
        print(f"\nfull-grid accuracy (max_op={args.max_op}; non-math on the held-out facts) with the selected "
              f"weights x{factor:g}:")
        print(evaluation.round(4).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in math_scores.items()}, str(out / "importance_math.safetensors"))
        save_file({k: v.contiguous() for k, v in general_scores.items()},
                  str(out / "importance_general.safetensors"))
        for k in ks:
            masks = math_specific(math_scores, general_scores, k, k_general)
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
    p.add_argument("--k-general", type=float, default=None,
                   help="the non-math top-K fraction (default: the same as K, as published; a larger one protects "
                        "more non-math weights)")
    p.add_argument("--shuffle", action="store_true", help="shuffle file samples (seeded) instead of file order")
    p.add_argument("--seed", type=int, default=0, help="seed for samples and the random baseline")
    p.add_argument("--batch-size", type=int, default=32, help="samples per forward pass")
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--prune", action="store_true", help="evaluate pruning (x0) the math-specific weights")
    edit.add_argument("--scale", type=float, default=None, help="evaluate scaling them by this factor, e.g. 1.1")
    p.add_argument("--out", default=None, help="folder for masks, importance (safetensors) and tables (CSV)")
    p.set_defaults(run=_mathneuro)
    add_study_parser(sub, parents)


def _table(title: str, frame, out: Path | None, name: str) -> None:
    print(f"\n{title}\n{frame.round(4).to_string(index=False)}")
    if out is not None:
        frame.to_csv(out / f"{name}.csv", index=False)


def _study(args: argparse.Namespace) -> int:
    from ..analysis import mathneuro_claims as claims
    from ..store import Store
    from ..tasks.samples import load_samples

    model, store = options.load(args), Store(args.store)
    k_general = parse_k_general(args.k_general)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with progress_bar(f"mathneuro-study {args.study}", args.quiet, unit="evaluation") as update:
        if args.study == "scaling":
            conditions = claims.parse_conditions(args.conditions, args.prompts)
            table = claims.scaling_study(model, conditions, store, args.k, k_general, parse_factors(args.factors),
                                         args.samples, args.seed, update)
        elif args.study == "single":
            per_pair, summary = claims.single_sample_study(model, store, args.pairs, args.k, k_general,
                                                           args.samples, args.prompts, args.seed, update)
        else:
            samples = load_samples(n=args.samples, seed=args.seed, n_general=args.general_samples,
                                   max_single_token=model.max_single_token)
            table = claims.frontier(model, samples, parse_ks(args.top_k), parse_k_generals(args.k_generals), store,
                                    args.prompts, args.tolerance, update)
    if args.study == "scaling":
        _table(f"scaling the math-specific weights (K={args.k:g}) vs as many random weights, {args.prompts} "
               "prompts per condition; gain = accuracy - clean, 95% bootstrap intervals over prompts:", table, out,
               "scaling")
        _table("best factor per condition:", claims.best_scaling(table), out, "scaling_best")
    elif args.study == "single":
        _table(f"single-sample masks (K={args.k:g}) pruned, per pair ({args.prompts} prompts per operator grid; "
               "non-math on held-out facts):", per_pair.drop(columns=["math_sample", "general_sample"]), out,
               "single_pairs")
        _table(f"over {args.pairs} pairs, beside the {args.samples}-sample masks:", summary, out, "single_summary")
    else:
        _table(f"frontier (prune; {args.prompts} prompts per operator grid; non-math on held-out facts):", table, out,
               "frontier")
        best = claims.frontier_best(table)
        print("no point keeps non-math within the tolerance" if best is None else
              f"best within {args.tolerance:g}: K={best['k']:g}, K-general={best['k_general']:g}: math drop "
              f"{best['math_drop']:+.3f}, non-math change {best['nonmath_change']:+.3f} (held-out), "
              f"{best['samples_half_change']:+.3f} on the sample half")
    if out is not None:
        print(f"wrote the tables to {out}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("give a count >= 0")
    return value


def add_study_parser(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``mathneuro-study scaling|single|frontier``."""
    p = sub.add_parser(
        "mathneuro-study", parents=[parents[k] for k in ("model", "store", "quiet")],
        help="MathNeuro's claims where they can fail: scaling per condition (out-of-range grid, a checkpoint, a "
             "template) vs a random control, single-sample robustness, the frontier over K and K-general")
    p.add_argument("study", choices=["scaling", "single", "frontier"])
    p.add_argument("--k", type=float, default=0.01, help="scaling, single: the top-K fraction (default 0.01)")
    p.add_argument("--k-general", type=float, default=None, help="the non-math top-K fraction (default: K)")
    p.add_argument("--conditions", default=None,
                   help="scaling: presets out-of-range, step-01000, fewshot, spaced, training-grid, or items "
                        "checkpoint:template:max_op:op (default out-of-range,step-01000,fewshot)")
    p.add_argument("--factors", default="0.8,0.9,1.1,1.2,1.3,1.4,1.5", help="scaling: the factors")
    p.add_argument("--prompts", type=_positive, default=None,
                   help="seeded prompts per condition (scaling, default 2000) or per operator grid (single, "
                        "frontier, default 500); 0 = the full grid")
    p.add_argument("--samples", type=int, default=100, help="math samples (and reference for single; default 100)")
    p.add_argument("--general-samples", type=int, default=None, help="frontier: non-math samples (default: same)")
    p.add_argument("--pairs", type=int, default=20, help="single: single-sample pairs (seeds 0..N-1, default 20)")
    p.add_argument("--top-k", default="0.01,0.02,0.03,0.05",
                   help="frontier: the K values (default 0.01,0.02,0.03,0.05)")
    p.add_argument("--k-generals", default=None,
                   help="frontier: non-math K values, 'k' for K itself (e.g. k,0.05,0.08; default k)")
    p.add_argument("--tolerance", type=float, default=0.05, help="frontier: non-math may fall this far (0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the tables (CSV)")
    p.set_defaults(run=_run_study)


def _run_study(args: argparse.Namespace) -> int:
    if args.prompts is None:
        args.prompts = 2000 if args.study == "scaling" else 500
    return _study(args)
