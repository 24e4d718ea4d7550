"""Export benchmark: one Operand Grid heatmap written as PNG, SVG, PDF and standalone HTML, cold and warm.

Run: ``.venv/bin/python benchmarks/bench_export.py [--model embedded] [--op +] [--neuron L3N12] [--max-op 100]
[--columns 1] [--repeats 5] [--json]``.
The figure is the page's: ``grid_heatmap`` of a real neuron map (computed into a temporary store first, not timed).
``neurolab.export.render.render`` does the work (the publication look, then kaleido with Debian's chromium, or Plotly
alone for HTML). Per format, "first" is the first export of that format in this process: the first static one
(PNG) includes starting chromium, the others find it warm. "warm" is the median of ``--repeats`` more. The issue's
bar: once warm, one figure in well under a second.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from neurolab.analysis.neuron_maps import neuron_map
from neurolab.errors import InputError
from neurolab.export.render import FORMATS, find_browser, render
from neurolab.models.loading import load_model
from neurolab.store import Store
from neurolab.viz.figures import grid_heatmap

WARM_TARGET = 1.0  # s per figure, once warm


def parse_neuron(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"L(\d+)N(\d+)", text.strip(), re.I)
    if not match:
        raise InputError(f"--neuron {text!r}: write it as L<layer>N<neuron>, e.g. L3N12")
    return int(match[1]), int(match[2])


def timed(fn) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--op", default="+", choices=["+", "-", "*", "/"])
    parser.add_argument("--neuron", default="L3N12", help="the neuron whose map is drawn, L<layer>N<neuron>")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--columns", type=int, default=1, choices=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (and nothing else)")
    args = parser.parse_args()
    say = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print
    layer, neuron = parse_neuron(args.neuron)

    model = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="neurolab-bench-export-") as tmp:
        store = Store(Path(tmp) / "store.duckdb")
        nmap = neuron_map(model, store, args.op, layer, neuron, max_op=args.max_op)
        store.close()
    figure = grid_heatmap(nmap, args.max_op, args.op)
    figures: dict = {"model": model.name, "neuron": nmap.label, "op": args.op, "max_op": args.max_op,
                     "columns": args.columns, "repeats": args.repeats, "browser": find_browser(), "formats": {}}
    say(f"{nmap.label} {nmap.kind} map of {model.name} over the {args.op} grid {args.max_op}x{args.max_op}, "
        f"{args.columns} column(s), chromium {figures['browser']}")

    for fmt in FORMATS:
        first, content = timed(lambda: render(figure, fmt, args.columns))
        warm = [timed(lambda: render(figure, fmt, args.columns))[0] for _ in range(args.repeats)]
        figures["formats"][fmt] = {"first_s": first, "warm_median_s": statistics.median(warm),
                                   "warm_min_s": min(warm), "warm_max_s": max(warm), "bytes": len(content)}

    say(f"\n{'format':<7} {'first (s)':>10} {'warm median (s)':>16} {'warm min-max (s)':>17} {'size (KB)':>10}")
    for fmt, entry in figures["formats"].items():
        say(f"{fmt:<7} {entry['first_s']:>10.3f} {entry['warm_median_s']:>16.3f} "
            f"{entry['warm_min_s']:>8.3f}-{entry['warm_max_s']:<8.3f} {entry['bytes'] / 1024:>10.0f}")
    slowest = max(entry["warm_median_s"] for entry in figures["formats"].values())
    figures["warm_target_met"] = slowest < WARM_TARGET
    say(f"\nfirst PNG includes starting chromium; slowest warm median {slowest:.3f} s per figure (target < "
        f"{WARM_TARGET:.0f} s: {'met' if figures['warm_target_met'] else 'NOT met'})")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
