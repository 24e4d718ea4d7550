"""The ``circuit`` command: activation patching of every MLP and attention head at every position."""

from __future__ import annotations

import argparse

from . import options
from .options import OPS
from .progress import progress_bar

#: ``neurolab.analysis.circuit.RULES`` and ``neurolab.capture.patching.METRICS``, copied so that building the parser
#: imports no torch (tests/test_cli_startup.py checks that they agree)
RULES = ("op1", "op2", "both")
METRICS = ("fraction", "logit_diff", "ie")


def _circuit(args: argparse.Namespace) -> int:
    from ..analysis.circuit import circuit_effects, top_components

    model, store, intervention = options.context(args)
    with progress_bar("patching components", args.quiet, unit="patch") as update:
        frame = circuit_effects(model, store, args.op, args.max_op, options.template(args), args.rule, args.pairs,
                                args.seed, options.layers(args.layers), intervention, args.metric, progress=update)
    print(f"circuit of {args.op!r}, rule {args.rule}, {int(frame['pairs'].iloc[0])} prompt pairs "
          f"(e.g. {frame['example'].iloc[0]}), metric {args.metric}; top {args.top} (component, position):")
    for row in top_components(frame, args.top).itertuples():
        print(f"  {row.component:>8} at {row.position} {row.token!r:>6}: {row.effect:+.4f}")
    if args.out:
        print(f"wrote {options.write_frame(frame, args.out)}")
    return 0


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``circuit`` to the subparsers ``sub``; ``parents`` holds model, store, grid, intervention, quiet."""
    p = sub.add_parser(
        "circuit", parents=[parents[k] for k in ("model", "grid", "intervention", "store", "quiet")],
        help="activation patching of each layer's MLP and each attention head at each position, clean vs "
             "counterfactual prompts")
    p.add_argument("--op", choices=OPS, required=True, help="operator")
    p.add_argument("--rule", choices=RULES, default="both",
                   help="counterfactual: op1 (change op1 only), op2 (change op2 only), both (another random prompt)")
    p.add_argument("--pairs", type=int, default=20, help="correct clean prompts, each with a counterfactual")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing prompts and counterfactuals")
    p.add_argument("--layers", default=None, help="layers to patch, e.g. 2,3 or 0-3 (default all)")
    p.add_argument("--metric", choices=METRICS, default="fraction",
                   help="fraction of the logit-difference swing (default), logit_diff (logits) or ie (science.md)")
    p.add_argument("--top", type=int, default=10, help="how many (component, position) to print")
    p.add_argument("--out", default=None, help="write every effect to this .csv or .parquet")
    p.set_defaults(run=_circuit)
