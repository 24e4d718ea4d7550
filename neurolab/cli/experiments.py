"""CLI commands of the causal checks: ``knockout --kind heuristic|prompt`` and ``failures``.

:func:`add_parsers` adds them to the main parser's subcommands, with the shared option parents."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from . import options
from .options import OPS
from .progress import progress_bar


def _settings(args: argparse.Namespace):
    from ..analysis.classification import ClassifySettings

    return ClassifySettings(maps=args.maps, top_n=args.top_n, threshold=args.threshold, n_prompts=args.prompts,
                            seed=args.seed)


def _ns(text: str) -> list[int]:
    """``0,5,10`` or ``0-100:5`` (start-stop:step, stop included)."""
    try:
        if "-" in text:
            span, _, step = text.partition(":")
            lo, hi = span.split("-")
            return list(range(int(lo), int(hi) + 1, int(step or 5)))
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise InputError(f"--ns {text!r}: write 0,5,10 or 0-100:5") from None


def _emit(frame, args: argparse.Namespace, title: str) -> None:
    import pandas as pd

    if args.json:
        print(json.dumps(json.loads(frame.to_json(orient="records")), indent=1))
    else:
        pd.set_option("display.width", 160)
        print(title)
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        print(f"wrote {options.write_frame(frame, args.out)}")


def _knockout(args: argparse.Namespace) -> int:
    from ..analysis.knockout import heuristic_knockout, prompt_knockout

    model, store, intervention = options.context(args)
    template, layers = options.template(args), options.layers(args.layers)
    with progress_bar(f"{args.kind} knockout {args.op}", args.quiet, unit="") as update:
        if args.kind == "heuristic":
            frame = heuristic_knockout(model, store, args.op, args.max_op, template, _settings(args),
                                       args.min_neurons, args.knockout_seed, update, layers=layers,
                                       mode=args.mode, max_prompts=args.max_prompts, intervention=intervention)
        else:
            frame = prompt_knockout(model, store, args.op, args.max_op, template, _settings(args), _ns(args.ns),
                                    args.n_prompts, args.knockout_seed, update, layers=layers,
                                    intervention=intervention)
    if args.kind == "heuristic":
        title = (f"{args.op}: {len(frame)} heuristics with >= {args.min_neurons} neurons, {args.mode}-ablated; "
                 f"mean accuracy related {frame['related_accuracy'].mean():.3f}, unrelated "
                 f"{frame['unrelated_accuracy'].mean():.3f} (paper, Llama3-8B +: 0.56 / 0.86)")
    else:
        frame = frame.pivot_table(index="n", columns="arm", values=["accuracy", "neurons"])
        frame.columns = [f"{arm}_{value}" for value, arm in frame.columns]
        frame = frame.reset_index()
        title = f"{args.op}: accuracy of {args.n_prompts} correct prompts with N neurons per layer ablated"
    _emit(frame, args, title)
    return 0


def _failures(args: argparse.Namespace) -> int:
    from ..analysis.failures import failure_analysis, failure_summary

    model, store, intervention = options.context(args)
    with progress_bar(f"failures {args.op}", args.quiet, unit="") as update:
        frame = failure_analysis(model, store, args.op, args.max_op, args.eval_max_op, args.n, args.knockout_seed,
                                 update,
                                 template=options.template(args), settings=_settings(args),
                                 layers=options.layers(args.layers), intervention=intervention)
    summary = failure_summary(frame)
    _emit(summary, args, f"{args.op}: heuristic neurons (classified on max_op {args.max_op}) per prompt of the "
                         f"max_op {args.eval_max_op} grid, mean per group")
    if args.per_prompt:
        print(frame.to_string(index=False))
    return 0


def _classification_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", choices=OPS, required=True)
    p.add_argument("--maps", choices=["K", "KV", "hybrid"], default="hybrid", help="classification maps")
    p.add_argument("--top-n", type=int, default=200, help="neurons per layer, by importance (default 200)")
    p.add_argument("--threshold", type=float, default=0.6, help="score a heuristic match needs (default 0.6)")
    p.add_argument("--layers", default=None, help="classified layers (default: first heuristics layer .. last)")
    p.add_argument("--knockout-seed", type=int, default=0, help="seed for sampling prompts and random neurons")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.add_argument("--out", default=None, help="also write the table to .csv or .parquet")


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``knockout`` and ``failures`` to ``sub`` (the main parser's subparsers); ``parents`` holds the option
    parents "model", "store", "grid", "importance", "intervention", "quiet"."""
    shared = [parents[k] for k in ("model", "grid", "importance", "intervention", "store", "quiet")]
    p = sub.add_parser("knockout", parents=shared,
                       help="ablate heuristic neurons: per heuristic (related vs other prompts) or per prompt "
                            "(its heuristic neurons vs random ones)")
    p.add_argument("--kind", choices=["heuristic", "prompt"], default="heuristic")
    _classification_options(p)
    p.add_argument("--min-neurons", type=int, default=10, help="heuristic: only heuristics with >= this many neurons")
    p.add_argument("--mode", choices=["zero", "mean"], default="zero", help="heuristic: ablation (default zero)")
    p.add_argument("--max-prompts", type=int, default=None, help="heuristic: at most this many related prompts")
    p.add_argument("--ns", default="0-100:5", help="prompt: N values, '0,5,10' or '0-100:5' (default)")
    p.add_argument("--n-prompts", type=int, default=200, help="prompt: correct prompts sampled (default 200)")
    p.set_defaults(run=_knockout)

    p = sub.add_parser("failures", parents=shared,
                       help="on correct vs wrong prompts of a larger grid: heuristic neurons that should fire vs fire")
    _classification_options(p)
    p.add_argument("--eval-max-op", type=int, default=150,
                   help="grid the prompts come from (default 150: the embedded model errs beyond 100)")
    p.add_argument("--n", type=int, default=50, help="correct and wrong prompts each (default 50)")
    p.add_argument("--per-prompt", action="store_true", help="also print every prompt's counts")
    p.set_defaults(run=_failures)
