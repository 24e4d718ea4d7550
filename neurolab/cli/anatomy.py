"""The ``anatomy`` command: each neuron's shape over the grid, its helix fit, its wiring, and method agreement."""

from __future__ import annotations

import argparse

from . import options
from .options import OPS
from .progress import progress_bar


def _anatomy(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..anatomy.layer import layer_anatomy, paper_vs_shape, shape_counts
    from ..capture.interventions import by_layer, parse_neurons

    model, store, intervention = options.context(args)
    chosen = None
    if args.neurons not in ("auto", "all", "top") and not args.neurons.startswith("top:"):
        chosen = by_layer(parse_neurons(args.neurons))
    layers = sorted(chosen) if chosen else options.layers(args.layers) or list(range(model.n_layers))
    tables = []
    with progress_bar("anatomy", args.quiet) as update:
        for layer in layers:
            neurons = chosen[layer] if chosen else args.neurons
            tables.append(layer_anatomy(model, store, args.op, layer, neurons, args.max_op, options.template(args),
                                        intervention, progress=update))
    table = pd.concat(tables, ignore_index=True)
    print(f"shapes of {args.op!r} ({len(table)} neurons; label counts per layer):")
    print(shape_counts(table).to_string())
    paper = paper_vs_shape(table)
    if not paper.empty:
        print("the paper's heuristic families (best match per neuron) by shape:")
        print(paper.to_string())
    if args.fit:
        table = _fit(args, model, store, intervention, table, layers)
    if args.wiring:
        _wiring(args, model, store, intervention, table)
    if args.agreement:
        _agreement(args, model, store, intervention, layers)
    if args.out:
        print(f"wrote {options.write_frame(table, args.out)}")
    return 0


def _fit(args, model, store, intervention, table, layers):
    import pandas as pd

    from ..analysis.sweep import grid_for
    from ..anatomy.helix import helix_fits, patch_the_fit

    grid = grid_for(model, args.op, args.max_op, options.template(args))
    fits = []
    with progress_bar("patch the fit", args.quiet, unit="step") as update:
        for layer in layers:
            neurons = table.loc[table["layer"] == layer, "neuron"].tolist()
            fit = helix_fits(model, store, grid, layer, neurons, intervention)
            fits.append(fit)
            patched = patch_the_fit(model, store, grid, layer, args.top_n, intervention, update).iloc[0]
            for point, part in fit.groupby("point"):
                print(f"L{layer} helix fit of the {point}-activation, {len(part)} neurons: NRMSE best "
                      f"{part['nrmse'].min():.3f}, median {part['nrmse'].median():.3f}; most common dominant term "
                      f"{part['dominant'].mode().iloc[0]}")
            print(f"L{layer} top {int(patched['neurons'])} neurons patched to their fits: accuracy "
                  f"{patched['fit']:.3f} (clean {patched['clean']:.3f}, mean-ablated {patched['mean_ablated']:.3f}; "
                  f"recovered {patched['recovered']:.2f})")
    wide = pd.concat(fits).pivot_table(index=["layer", "neuron"], columns="point",
                                       values=["nrmse", "result_fraction"]).reset_index()
    wide.columns = ["layer", "neuron", *(f"{value}_{point}" for value, point in wide.columns[2:])]
    return table.merge(wide, on=["layer", "neuron"], how="left")


def _wiring(args, model, store, intervention, table) -> None:
    from ..analysis.sweep import NeuronSelection, run_sweep
    from ..anatomy.wiring import stored_connections

    listed = args.neurons not in ("auto", "all", "top") and not args.neurons.startswith("top:")
    with progress_bar("sweep of every layer", args.quiet) as update:  # links run to the other layers' neurons
        sweep_id = run_sweep(model, store, args.op, NeuronSelection.parse("auto" if listed else args.neurons),
                             args.max_op, options.template(args), intervention, progress=update).sweep_id
    strongest = table.reindex(table["direct_effect"].abs().sort_values(ascending=False).index).head(args.show)
    for row in strongest.itertuples():
        links = stored_connections(model, store, sweep_id, int(row.layer), int(row.neuron), args.links)
        print(f"{row.label} ({row.shape}, direct effect {row.direct_effect:+.3f}): strongest links by TWERA")
        for link in links.itertuples():
            print(f"  {link.direction:>6} {link.label:>8}: TWERA {link.twera:+.4f}, virtual weight {link.virtual:+.4f}")


def _agreement(args, model, store, intervention, layers) -> None:
    from ..analysis.sweep import grid_for
    from ..anatomy.agreement import agreement_summary, method_scores

    grid = grid_for(model, args.op, args.max_op, options.template(args))
    with progress_bar("activation patching", args.quiet, unit="neuron") as update:
        scores = method_scores(model, store, grid, layers, args.prompts, args.seed, intervention, update)
    print(f"attribution vs exact activation patching, {int(scores['prompts'].iloc[0])} prompt pairs:")
    print(agreement_summary(scores, args.top_n).round(3).to_string(index=False))


def add_parsers(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    """Add ``anatomy`` to the subparsers ``sub``; ``parents`` holds model, store, grid, intervention, quiet."""
    p = sub.add_parser(
        "anatomy", parents=[parents[k] for k in ("model", "grid", "intervention", "store", "quiet")],
        help="what function of the operands each neuron computes (shape, spectrum, helix fit) and how neurons wire")
    p.add_argument("--op", choices=OPS, required=True, help="operator")
    p.add_argument("--layers", default=None, help="layers, e.g. 3 or 2,3 or 0-3 (default all)")
    p.add_argument("--neurons", default="auto",
                   help="auto (every neuron unless too many, else top), all, top / top:N (by importance), or a "
                        "list L3N12,L3N40 (its layers replace --layers)")
    p.add_argument("--fit", action="store_true",
                   help="helix fit of each neuron's pre-activation (one grid pass per layer) and patch-the-fit of "
                        "each layer's top --top-n neurons (accuracy clean / fit / mean-ablated)")
    p.add_argument("--wiring", action="store_true",
                   help="strongest inputs and outputs (TWERA) of the --show neurons with the largest direct effect")
    p.add_argument("--agreement", action="store_true",
                   help="attribution vs exact activation patching per layer (a forward pass per neuron: small "
                        "models)")
    p.add_argument("--top-n", type=int, default=20, help="neurons patched to their fits; top-k of the agreement")
    p.add_argument("--show", type=int, default=3, help="neurons whose wiring is printed")
    p.add_argument("--links", type=int, default=5, help="inputs and outputs printed per neuron")
    p.add_argument("--prompts", type=int, default=50, help="prompt pairs of the agreement")
    p.add_argument("--seed", type=int, default=0, help="seed of the agreement's prompt pairs")
    p.add_argument("--out", default=None, help="write the anatomy table to this .csv or .parquet")
    p.set_defaults(run=_anatomy)
