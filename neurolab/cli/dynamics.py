"""The ``dynamics`` and ``robustness`` commands: heuristics over training checkpoints, and under other templates."""

from __future__ import annotations

import argparse

from . import options
from .options import OPS
from .progress import progress_bar

#: ``neurolab.analysis.significance.FDR``, copied so that building the parser imports no numpy/torch
FDR = 0.01


def _settings(args: argparse.Namespace):
    from ..analysis.dynamics import DynamicsSettings

    layers = options.layers(args.layers)
    return DynamicsSettings(layers=None if layers is None else tuple(layers), classify_top=args.classify_top,
                            share_top=args.share_top, ablate_n=args.ablate_n, max_op=args.max_op,
                            threshold=args.threshold, seed=args.seed, alpha=args.fdr)


def _dynamics(args: argparse.Namespace) -> int:
    from ..analysis.dynamics import parse_series, run_series
    from ..models.loading import load_model
    from ..store import Store, deferred

    series = parse_series(args.series)
    store = Store(args.store)
    with progress_bar(f"{len(series)} checkpoints", args.quiet, unit="step") as update:
        dynamics = run_series(store, series, args.op, options.template(args), _settings(args), update,
                              lambda c: load_model(c.name, device=args.device, dtype=args.dtype, revision=c.revision))
    deferred.flush()
    table = dynamics.table()
    columns = ["checkpoint", "step", f"accuracy_{args.op}", "share_any_raw", "share_any_significant",
               "accuracy_ablated", "accuracy_control", "intersection_raw", "intersection_significant"]
    print(f"heuristics of {args.op!r} over {len(series)} checkpoints (shares raw / significant at FDR {args.fdr}):")
    print(table[[c for c in columns if c in table]].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        print(f"wrote {options.write_frame(table, args.out)}")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from ..analysis.robustness import template_robustness, templates_with
    from ..store import Store, deferred

    model, store = options.load(args), Store(args.store)
    with progress_bar("templates", args.quiet) as update:
        result = template_robustness(model, store, args.op, templates_with(args.custom), _settings(args), update)
    deferred.flush()
    table = result.summary.merge(result.survival(), on="template")
    print(f"{args.op!r} under {len(result.templates)} templates (reference: {result.templates[0]}):")
    print(table[["template", f"accuracy_{args.op}", "share_any_raw", "share_any_significant", "survive_raw",
                 "survive_significant"]].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        print(f"wrote {options.write_frame(result.heuristics(), args.out)}")
    return 0


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", choices=OPS, required=True, help="operator")
    p.add_argument("--layers", default=None, help="layers to classify, e.g. 3 or 2-3 (default: the last layer)")
    p.add_argument("--classify-top", type=int, default=512,
                   help="neurons per layer classified, most important first (default 512: every neuron of the "
                        "embedded model, so any neuron's map exists at every checkpoint)")
    p.add_argument("--share-top", type=int, default=200, help="shares are over this many top neurons per layer")
    p.add_argument("--ablate-n", type=int, default=50, help="ablate this many top neurons with a heuristic")
    p.add_argument("--threshold", type=float, default=0.6, help="heuristic score threshold")
    p.add_argument("--fdr", type=float, default=FDR, help="false discovery rate of a significant match")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance prompts and the random control")
    p.add_argument("--out", default=None, help="write the table to this .csv or .parquet")


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``dynamics`` and ``robustness`` to the subparsers ``sub``."""
    p = sub.add_parser("dynamics", parents=[parents[k] for k in ("grid", "store", "quiet")],
                       help="heuristic neurons over training checkpoints: accuracy, shares, ablation, intersection")
    p.add_argument("--series", default="embedded",
                   help="embedded (its checkpoints + final model), MODEL@rev1,rev2 (hub revisions) or DIR1,DIR2")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    _shared(p)
    p.set_defaults(run=_dynamics)
    p = sub.add_parser("robustness", parents=[parents[k] for k in ("model", "grid", "store", "quiet")],
                       help="the same neurons' heuristics under the plain, spaced, fewshot (and a custom) template")
    p.add_argument("--custom", default=None, help="a fourth template, e.g. 'Q: {op1} {op} {op2} = '")
    _shared(p)
    p.set_defaults(run=_robustness)
