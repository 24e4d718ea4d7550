"""The ``figure`` and ``graph`` commands: any chart of the dashboard as a file, made by the same builders the pages
call (:mod:`neurolab.export.kinds`), with its data (CSV) and provenance beside it; picked or labelled neurons as a
graph JSON for circuit-tracer's and Neuronpedia's viewers (:mod:`neurolab.export.graph`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from . import options
from .options import OPS
from .progress import progress_bar

#: ``neurolab.export.bundle.FIGURE_FORMATS``, copied so that building the parser imports no plotly
FORMATS = ("png", "svg", "pdf", "html")
#: option -> selection key of ``neurolab.export.kinds`` (``--op`` is ``ops`` for the Atlas)
SELECTION = {
    "op": "op", "max_op": "max_op", "template": "template", "neuron": "neuron", "map": "map", "mod": "mod",
    "heuristic": "heuristic", "ops": "ops", "layers": "layers", "groups": "groups", "heuristic_kind": "kind",
    "query": "query", "min_score": "min_score", "min_lift": "min_lift", "neurons": "neurons", "mode": "mode",
    "seed": "seed", "name": "name", "origin": "origin", "top_n": "top", "rule": "rule", "pairs": "pairs",
    "eval_max_op": "eval_max_op", "count": "count", "samples": "samples", "single": "single", "ks": "ks",
    "factor": "factor", "k": "k", "k_general": "k_general", "math": "math", "general": "general", "prompt": "prompt",
    "per_layer": "per_layer", "series": "series", "metric": "metric", "condition": "condition", "custom": "custom",
    "layer": "layer", "link": "link", "classify_top": "classify_top", "share_top": "share_top", "ablate_n": "ablate_n",
}
#: kinds ``--all`` leaves out: not about one operator (MathNeuro scores weights on mixed samples), a series of
#: checkpoints or templates (minutes each: ``dynamics``/``robustness`` compute them), or a layer's or a link's
#: anatomy (export those by name)
NOT_OF_AN_OPERATOR = ("mathneuro", "mathneuro-matrices", "dynamics", "dynamics-map", "robustness",
                      "anatomy-decomposition", "anatomy-spectrum", "anatomy-helix", "anatomy-signs", "anatomy-link",
                      "anatomy-shapes", "anatomy-fraction", "anatomy-patch", "anatomy-agreement")


def _given(args: argparse.Namespace) -> dict:
    """The selection options the user gave, by selection key."""
    return {key: getattr(args, option) for option, key in SELECTION.items() if getattr(args, option) is not None}


def _for_kind(keys, given: dict) -> dict:
    """The options that apply to a kind with selection ``keys``: ``--op`` is the Atlas' ``ops``."""
    chosen = dict(given)
    if "op" in chosen and "op" not in keys and "ops" in keys:
        chosen.setdefault("ops", chosen.pop("op"))
    return chosen


def _paths(out: Path, fmt: str | None) -> tuple[str, Path, str]:
    """(figure format, folder, stem) of ``--out FILE``: the format from ``--format`` or FILE's suffix."""
    suffix = out.suffix.lstrip(".")
    fmt = fmt or suffix
    if fmt not in FORMATS:
        raise InputError(f"--out {out}: give --format ({', '.join(FORMATS)}) or a file ending in one of them")
    if suffix and suffix != fmt:
        raise InputError(f"--out {out} does not end in .{fmt} (the --format)")
    return fmt, out.parent, out.stem if suffix else out.name


def _write(export, folder: Path, fmt: str, columns: int) -> list[Path]:
    """The data and provenance first (they need no browser), then the figure in ``fmt``."""
    from ..export.bundle import PROVENANCE

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("csv", PROVENANCE, *((fmt,) if export.figure is not None else ())):
        path = folder / export.filename(name)
        path.write_bytes(export.file(name, columns))
        written.append(path)
    return written


def _context(args: argparse.Namespace):
    """(model, store, intervention) of the options; a mean ``--ablate`` averages over the figure's grid (``--op``,
    ``--max-op``, default 100, the plain template)."""
    return options.context(argparse.Namespace(**{**vars(args), "max_op": args.max_op or 100, "fewshot": None}))


def _figure(args: argparse.Namespace) -> int:
    from ..export import kinds
    from ..export.provenance import Provenance
    from ..store import Store

    if args.all:
        return _all(args)
    if args.out is None:
        raise InputError("give --out FILE (or --out DIR with --all)")
    fmt, folder, stem = _paths(Path(args.out), args.format)
    if args.source:
        if args.kind:
            raise InputError("--from makes the figure its provenance describes: give no kind")
        with progress_bar("figure", args.quiet, unit="") as update:
            export = kinds.rebuild(Provenance.read(args.source), Store(args.store), update)
    else:
        if args.kind is None:
            raise InputError(f"give a figure kind: {', '.join(kinds.KINDS)}")
        kind = kinds.KINDS.get(args.kind)
        if kind is None:
            raise InputError(f"unknown figure kind {args.kind!r}; known: {', '.join(kinds.KINDS)}")
        model, store, intervention = _context(args)
        with progress_bar(f"figure {args.kind}", args.quiet, unit="") as update:
            export = kinds.build(args.kind, model, store, _for_kind(kind.keys, _given(args)), intervention, update)
    written = _write(replace(export, stem=stem), folder, fmt, args.columns)
    print(f"{export.provenance.describe()}: wrote {', '.join(map(str, written))}")
    return 0


def _all(args: argparse.Namespace) -> int:
    """Every kind about ``--op``, each into ``--out DIR`` under its own stem."""
    from ..export import kinds

    if args.op is None or args.out is None or args.kind or args.source:
        raise InputError("--all takes --op and --out DIR (and selection options), no kind and no --from")
    fmt = args.format or "svg"
    model, store, intervention = _context(args)
    given = _given(args)
    selections = _operator_selections(model, store, intervention, given)
    written = []
    with progress_bar(f"figures of {args.op}", args.quiet, unit="figure") as update:
        for i, (name, chosen) in enumerate(selections.items()):
            update(i, len(selections), name)
            export = kinds.build(name, model, store, chosen, intervention)
            written += _write(export, Path(args.out), fmt, args.columns)
        update(len(selections), len(selections), "done")
    print(f"wrote {len(selections)} figures of {args.op} ({', '.join(selections)}) with their data and provenance "
          f"to {args.out}")
    skipped = [name for name in kinds.KINDS if name not in selections and name not in NOT_OF_AN_OPERATOR]
    if skipped:
        print(f"skipped {', '.join(skipped)}: no heuristic for the neuron (give --heuristic)", file=sys.stderr)
    return 0


def _operator_selections(model, store, intervention, given: dict) -> dict[str, dict]:
    """Each kind's selection for ``--all``: the given options a kind takes; the neuron kinds for ``--neuron``, else
    the operator's best-scoring classified neuron, else the most active stored one; a prompt of the grid."""
    from ..analysis.sweep import grid_for
    from ..export import kinds
    from ..tasks.grid import parse_template

    grid = grid_for(model, given["op"], given.get("max_op", 100), parse_template(given.get("template")))
    neuron, heuristic = _neuron_for(model, store, grid, intervention, given)
    a, b = grid.pairs[len(grid.pairs) // 2]
    filled = {"neuron": neuron, "heuristic": heuristic, "neurons": neuron, "prompt": f"{a}{grid.op}{b}=",
              **{key: value for key, value in given.items() if value is not None}}
    selections = {}
    for name, kind in kinds.KINDS.items():
        if name in NOT_OF_AN_OPERATOR or (kind.keys.get("heuristic", "") is kinds.REQUIRED and not heuristic):
            continue
        selections[name] = {key: value for key, value in _for_kind(kind.keys, filled).items() if key in kind.keys}
    return selections


def _neuron_for(model, store, grid, intervention, given: dict) -> tuple[str, str | None]:
    """``--neuron`` (with ``--heuristic`` or its best label), else the best classified neuron and label, else the
    most active neuron of the last layer with stored maps (no label)."""
    from ..analysis.atlas import atlas
    from ..analysis.neuron_maps import most_active
    from ..analysis.sweep import find_sweep
    from ..models.adapters import neuron_label

    rows = atlas(store, model.fingerprint)
    rows = rows[(rows["op"] == grid.op) & (rows["max_op"] == grid.max_op) & (rows["template"] == grid.template.key)
                & (rows["intervention"] == (intervention.key if intervention else "none"))]
    if given.get("neuron"):
        rows = rows[rows["label"] == given["neuron"]]
    rows = rows.sort_values("score", ascending=False, kind="stable")
    heuristic = given.get("heuristic") or (rows["heuristic"].iloc[0] if len(rows) else None)
    if given.get("neuron") or len(rows):
        return given.get("neuron") or rows["label"].iloc[0], heuristic
    sweep_id = find_sweep(model, store, grid, intervention)
    stored = {} if sweep_id is None else store.stored_neurons(sweep_id)
    if not stored:
        raise InputError(f"no neuron of {grid.op} (max_op {grid.max_op}) is classified or stored: give --neuron "
                         "L3N12, or classify first (`python -m neurolab classify`)")
    layer = max(stored)
    return neuron_label(layer, int(most_active(store, sweep_id, layer, 1)["neuron"].iloc[0])), heuristic


def _graph(args: argparse.Namespace) -> int:
    from ..export.graph import atlas_neurons, neuron_graph

    if bool(args.labels) == bool(args.from_atlas):
        raise InputError("choose the neurons one way: --labels L3N12,L3N40 or --from-atlas (with --query, "
                         "--layers, --min-score, --limit)")
    model, store, intervention = options.context(args)
    template = options.template(args)
    labels = args.labels or atlas_neurons(model, store, args.op, args.max_op, template, intervention, args.query,
                                          options.layers(args.layers), args.min_score, args.limit)
    graph = neuron_graph(model, store, labels, args.op, args.max_op, template, intervention, args.prompt)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(graph, indent=1))
    neurons = [node for node in graph["nodes"] if node["feature_type"] != "logit"]
    print(f"wrote {out}: {len(neurons)} neurons ({sum(bool(n['clerp']) for n in neurons)} labelled), "
          f"{len(graph['links'])} links")
    for node in neurons:
        print(f"  {node['label']:>8}  {node['clerp'] or '-'}")
    return 0


def _selection_options(p: argparse.ArgumentParser) -> None:
    """The options of ``neurolab.export.kinds``' selections (each kind takes its own: see ``figure --help``)."""
    grid = p.add_argument_group("grid and neuron (heatmap, overlay, folded, result, lens, ablation, circuit kinds)")
    grid.add_argument("--op", choices=OPS, help="operator (with --all: the operator whose figures to export)")
    grid.add_argument("--max-op", type=int, help="operands are 0 <= op < max_op (the kind's default: 100)")
    grid.add_argument("--template", help="prompt template: plain, spaced, fewshot or a format with {op1} {op} {op2}")
    grid.add_argument("--neuron", help="the neuron, e.g. L3N12")
    grid.add_argument("--map", choices=["K", "KV"], help="K (activation) or KV (activation x value vector's logit)")
    grid.add_argument("--mod", type=int, help="folded: fold the grid modulo this (default 10)")
    grid.add_argument("--heuristic", help="overlay, lens: a heuristic name such as result_range_50_100")
    atlas = p.add_argument_group("atlas")
    atlas.add_argument("--ops", help="operators, e.g. +,- (default all)")
    atlas.add_argument("--layers", help="layers, e.g. 2,3 (default all)")
    atlas.add_argument("--groups", help="display groups, e.g. range,modulo (default all)")
    atlas.add_argument("--heuristic-kind", choices=["all", "direct", "indirect"], help="direct or indirect heuristics")
    atlas.add_argument("--query", help="search as the Atlas reads it: L3N12, L3, 'op1 range 50-60', 'result 0 mod 10'")
    atlas.add_argument("--min-score", type=float, help="lowest score (default 0.6)")
    atlas.add_argument("--min-lift", type=float, help="lowest lift over the base rate (default 1.0)")
    lab = p.add_argument_group("ablation, ablation-accuracy")
    lab.add_argument("--neurons", help="neurons to ablate, e.g. L3N12,L3N40")
    lab.add_argument("--mode", choices=["zero", "mean"], help="zero (default) or the neuron's mean over the grid")
    lab.add_argument("--seed", type=int, help="seed of the random control, the prompt pairs or the samples")
    lab.add_argument("--name", help="name of the ablation")
    lab.add_argument("--origin", help="where the neurons came from (manual, heuristic, top-n)")
    circuit = p.add_argument_group("knockout, prompt-knockout, patching, failures")
    circuit.add_argument("--top-n", type=int, help="neurons per layer the classification looks at (default 200)")
    circuit.add_argument("--rule", choices=["op1", "op2", "both"], help="patching: the counterfactual prompts")
    circuit.add_argument("--pairs", type=int, help="patching: prompt pairs (default 20)")
    circuit.add_argument("--eval-max-op", type=int, help="failures: the grid where the model errs")
    circuit.add_argument("--count", type=int, help="failures: prompts of each outcome (default 50)")
    mathneuro = p.add_argument_group("mathneuro, mathneuro-matrices")
    mathneuro.add_argument("--samples", type=int, help="samples of each kind (default 100)")
    mathneuro.add_argument("--single", action="store_true", default=None, help="one math and one non-math sample")
    mathneuro.add_argument("--ks", help="fractions per weight matrix, e.g. 0.01,0.05")
    mathneuro.add_argument("--k", type=float, help="mathneuro-matrices: the fraction (default 0.01)")
    mathneuro.add_argument("--k-general", type=float, help="the non-math top-K's fraction (default: K, as published)")
    mathneuro.add_argument("--factor", type=float, help="0 prunes (default), e.g. 1.1 scales the selected weights")
    mathneuro.add_argument("--math", help="math samples file (.csv/.jsonl)")
    mathneuro.add_argument("--general", help="non-math samples file (.csv/.jsonl)")
    prompt = p.add_argument_group("prediction, prediction-neurons, bag")
    prompt.add_argument("--prompt", help="a prompt such as 23+45= (--all: one of the grid)")
    prompt.add_argument("--per-layer", type=int, help="prediction-neurons: neurons per layer (default 10)")
    series = p.add_argument_group("dynamics, dynamics-map, robustness")
    series.add_argument("--series", help="embedded, MODEL@rev1,rev2 or DIR1,DIR2")
    series.add_argument("--metric", choices=["accuracy", "share", "ablation", "intersection"], help="dynamics' chart")
    series.add_argument("--condition", help="dynamics-map: 'checkpoint step 250', 'template spaced' or 'model DIR'")
    series.add_argument("--custom", help="robustness: a fourth template, e.g. 'Q: {op1} {op} {op2} ='")
    series.add_argument("--classify-top", type=int, help="neurons per layer classified at each checkpoint")
    series.add_argument("--share-top", type=int, help="shares are over this many top neurons per layer")
    series.add_argument("--ablate-n", type=int, help="top heuristic neurons ablated against the control")
    anatomy = p.add_argument_group("anatomy-* kinds")
    anatomy.add_argument("--layer", type=int, help="anatomy-shapes, -fraction, -patch, -agreement: the layer")
    anatomy.add_argument("--link", help="anatomy-link: the wiring thumbnail's other neuron, e.g. L2N309")


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``figure`` and ``graph`` to the subparsers ``sub``; ``parents`` holds model, store, grid, intervention,
    quiet."""
    p = sub.add_parser(
        "figure", parents=[parents[k] for k in ("model", "intervention", "store", "quiet")],
        help="write a dashboard figure (PNG, SVG, PDF or HTML) with its data (CSV) and provenance JSON",
        description="Kinds: heatmap, overlay, folded, result, lens (one neuron over the grid), atlas, ablation, "
                    "ablation-accuracy, knockout, prompt-knockout, patching, failures, mathneuro, "
                    "mathneuro-matrices, prediction, prediction-neurons, bag, dynamics, dynamics-map, robustness, "
                    "anatomy-decomposition, anatomy-spectrum, anatomy-helix, anatomy-signs, anatomy-link, "
                    "anatomy-shapes, anatomy-fraction, anatomy-patch, anatomy-agreement. FILE.csv and "
                    "FILE.provenance.json are written beside FILE; `--from FILE.provenance.json` makes the figure "
                    "again.")
    p.add_argument("kind", nargs="?", help="the figure kind (see above)")
    p.add_argument("--format", choices=FORMATS, help="default: --out's suffix (--all: svg)")
    p.add_argument("--out", help="the figure's file (with --all: a folder)")
    p.add_argument("--columns", type=int, choices=[1, 2], default=1, help="size for a one- or two-column paper")
    p.add_argument("--all", action="store_true", help="every figure of --op (neuron kinds for --neuron, else the "
                                                      "best classified neuron) into the folder --out")
    p.add_argument("--from", dest="source", metavar="PROVENANCE",
                   help="make the figure a provenance JSON describes (its model, intervention and selection)")
    _selection_options(p)
    p.set_defaults(run=_figure)

    p = sub.add_parser(
        "graph", parents=[parents[k] for k in ("model", "grid", "intervention", "store")],
        help="picked or labelled neurons as graph JSON for circuit-tracer / Neuronpedia (nodes with heuristic "
             "labels as clerp, links to the answer's logit)")
    p.add_argument("--op", choices=OPS, required=True, help="the operator whose labels, importance and maps to use")
    p.add_argument("--labels", help="the neurons, e.g. L3N12,L3N40")
    p.add_argument("--from-atlas", action="store_true", help="the classified neurons the filters below keep")
    p.add_argument("--query", default="", help="--from-atlas: search as the Atlas reads it (L3, 'result 0 mod 10')")
    p.add_argument("--layers", default=None, help="--from-atlas: layers, e.g. 2,3 or 0-3")
    p.add_argument("--min-score", type=float, default=0.6, help="--from-atlas: lowest score (default 0.6)")
    p.add_argument("--limit", type=int, default=100, help="--from-atlas: at most this many, best first (100)")
    p.add_argument("--prompt", default=None, help="add activations at this prompt, its answer's logit node and "
                                                  "each neuron's direct effect on it, e.g. 23+45=")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.set_defaults(run=_graph)
