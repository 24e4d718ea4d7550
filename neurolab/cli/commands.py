"""The command line: every long computation, runnable in batch, calling the same functions the pages call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import paths
from ..errors import InputError, NeurolabError
from . import anatomy, circuit, dynamics, experiments, figures, mathneuro, options
from .options import OPS
from .progress import progress_bar


def _train(args: argparse.Namespace) -> int:
    from ..train.modelcard import write_model_card
    from ..train.training import PRESETS, TrainConfig, train

    overrides = {k: v for k, v in {"steps": args.steps, "seed": args.seed, "max_op": args.max_op}.items()
                 if v is not None}
    config = TrainConfig.from_dict({**vars(PRESETS[args.preset]), **overrides})
    out = Path(args.out) if args.out else paths.MODELS_DIR / config.name
    with progress_bar(f"train {config.name}", args.quiet, unit="step") as update:
        metadata = train(config, out, Path(args.state_dir) if args.state_dir else paths.train_state_dir(),
                         fresh=args.fresh, progress=update)
    card = write_model_card(out)
    final = metadata["history"][-1]
    print(f"saved {out} ({metadata['train_seconds'] / 60:.1f} min); held-out accuracy: "
          + ", ".join(f"{k} {final[k]:.3f}" for k in (*OPS, "nonmath")) + f"; card: {card}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..analysis.evaluation import evaluate

    model, _, intervention = options.context(args)
    result = evaluate(model, max_op=args.max_op, sample=args.sample, intervention=intervention)
    if args.json:
        print(json.dumps({**result.as_dict(), "intervention": intervention.key}, indent=1))
        return 0
    print(f"{model.name} ({model.adapter.family}, fingerprint {model.fingerprint}) on {result.split}")
    for key, score in result.scores.items():
        print(f"  {key:>8}  {score.accuracy:7.2%}  ({score.correct}/{score.total})")
    return 0


def _info(args: argparse.Namespace) -> int:
    for label, text in options.load(args).describe().items():
        print(f"{label:>26}  {text}")
    return 0


def _selection(args: argparse.Namespace):
    from ..analysis.sweep import NeuronSelection

    return NeuronSelection.parse(args.neurons, options.layers(args.layers), top_n=args.top_n,
                                 n_prompts=args.prompts, seed=args.seed)


def _sweep(args: argparse.Namespace) -> int:
    from ..analysis.sweep import grid_for, plan_sweep, run_sweep
    from ..tasks.arithmetic import OP_NAMES

    model = options.load(args)
    template = options.template(args)
    selection = _selection(args)
    ops = OPS if args.op == "all" else [args.op]
    if args.dry_run:
        for op in ops:
            plan = plan_sweep(model.n_layers, model.d_mlp, len(model.number_token_ids),
                              len(grid_for(model, op, args.max_op, template)), selection)
            print(f"{op}: {plan.describe(len(model.number_token_ids))}")
        return 0
    _, store, intervention = options.context(args, model)
    for op in ops:
        def announce(plan, op=op) -> None:
            print(f"{op}: {plan.describe(len(model.number_token_ids))}", file=sys.stderr)

        with progress_bar(f"sweep {op}", args.quiet) as update:
            result = run_sweep(model, store, op, selection, args.max_op, template, intervention,
                               chunk_size=args.chunk_size, progress=update, announce=announce, remote=args.remote)
        state = "already cached, nothing to compute" if result.cached else (
            f"computed {result.chunks_computed} chunk passes of {result.chunks_total} chunks")
        layers = ",".join(map(str, result.layers)) or "none (answers only)"
        print(f"{op}: sweep {result.sweep_id}, {result.n_prompts} prompts, layers {layers}, intervention "
              f"{intervention.key}: {state} ({store.path})")
        if args.out:
            out = Path(args.out)
            if len(ops) > 1:
                out = out.with_name(f"{out.stem}-{OP_NAMES[op]}{out.suffix}")
            store.export_sweep_values(result.sweep_id, out)
            print(f"wrote {out}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.classification import ClassifySettings, classify_operator
    from ..analysis.value_lens import agreement

    model, store, intervention = options.context(args)
    settings = ClassifySettings(maps=args.maps, top_n=args.top_n, threshold=args.threshold,
                                n_prompts=args.prompts, seed=args.seed)
    with progress_bar("classify", args.quiet, unit="") as update:
        result = classify_operator(model, store, args.op, args.max_op, options.template(args), settings,
                                   layers=options.layers(args.layers), intervention=intervention,
                                   progress=update)
    pd.set_option("display.width", 160)
    print(f"{args.op}: first heuristics layer {result.first_layer} (MLP output's promotion of the answer):")
    print(result.evidence.to_string(index=False))
    print(f"\ntop {settings.top_n} neurons per layer ({settings.maps} maps, threshold {settings.threshold}): "
          "how many match at least one heuristic, by group")
    print(result.coverage().to_string(index=False))
    direct = result.matched[result.matched["direct"]]
    checked = agreement(model, direct, store.prompts(result.sweep_id)["answer"].to_numpy())
    if len(checked):
        print(f"\nvalue vectors of direct heuristic neurons: {checked['agrees'].mean():.1%} of {len(checked)} "
              f"(neuron, heuristic) matches promote mostly the heuristic's results "
              f"(mean share {checked['share'].mean():.2f} vs chance {checked['chance'].mean():.2f})")
    if args.out:
        print(f"wrote {options.write_frame(result.scores, args.out)} ({len(result.scores):,} scores)")
    return 0


def _importance(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.importance import activation_patching, attribution_patching, prompt_pairs
    from ..analysis.sweep import NeuronSelection, grid_for, run_sweep

    model, store, intervention = options.context(args)
    sweep = run_sweep(model, store, args.op, NeuronSelection("none"), args.max_op, options.template(args),
                      intervention)
    grid = grid_for(model, args.op, args.max_op, options.template(args))
    pairs = prompt_pairs(model, grid, args.prompts, args.seed, store.prompts(sweep.sweep_id)["correct"].to_numpy())
    layers = options.layers(args.layers)
    frames = []
    if args.method in ("attribution", "both"):
        frames.append(attribution_patching(model, pairs, layers, intervention=intervention))
    if args.method in ("activation", "both"):
        with progress_bar("activation patching", args.quiet, unit="neuron") as update:
            frames.append(activation_patching(model, pairs, layers, progress=update, intervention=intervention))
    for frame in frames:
        store.write_importance(sweep.sweep_id, args.prompts, args.seed, frame)
    table = pd.concat(frames)
    for method, part in table.groupby("method"):
        print(f"{method} patching, {len(pairs.clean)} prompt pairs; top 5 neurons per layer (mean + std):")
        for layer, rows in part.groupby("layer"):
            best = rows.sort_values("rank").head(5)
            print(f"  layer {layer}: " + ", ".join(f"L{layer}N{n} {v:.4f}" for n, v in zip(best["neuron"],
                                                                                         best["score"])))
    if args.method == "both":
        wide = table.pivot_table(index=["layer", "neuron"], columns="method", values="mean")
        print(f"correlation of mean effects, attribution vs activation: "
              f"{wide['attribution'].corr(wide['activation']):.3f} (Pearson), "
              f"{wide['attribution'].rank().corr(wide['activation'].rank()):.3f} (Spearman)")
    if args.out:
        print(f"wrote {options.write_frame(table, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..store import Store

    print(f"wrote {Store(args.store).export(args.source, args.out)}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from ..analysis.ablation import ablate_grid, heuristic_neurons, neuron_ablation, top_n
    from ..analysis.sweep import grid_for
    from ..capture.interventions import parse_neurons
    from ..store import Store

    model, store = options.load(args), Store(args.store)
    grid = grid_for(model, args.op, args.max_op, options.template(args))
    if sum(x is not None for x in (args.heuristic, args.neurons, args.top_n)) != 1:
        raise InputError("choose the neurons one way: --heuristic NAME, --neurons L3N12,... or --top-n N --layer L")
    if args.heuristic:
        neurons, origin = heuristic_neurons(model, store, grid, args.heuristic), f"heuristic {args.heuristic}"
    elif args.neurons:
        neurons, origin = list(parse_neurons(args.neurons)), "manual"
    else:
        if args.layer is None:
            raise InputError("--top-n needs --layer")
        neurons, origin = top_n(model, store, grid, args.layer, args.top_n), f"top-{args.top_n} of layer {args.layer}"
    chosen = neuron_ablation(neurons, args.mode, grid, args.name or "", origin)
    seed = args.seed if args.control == "random" else None
    with progress_bar("ablate", args.quiet, unit="") as update:
        result = ablate_grid(model, store, args.op, chosen, args.max_op, options.template(args), seed,
                             progress=update)
    summary = {"intervention": chosen.key, "name": chosen.name, "origin": origin, "neurons": len(neurons),
               "mode": args.mode, **{f"accuracy_{k}": v for k, v in result.summary().items()}}
    if result.control is not None:
        summary["control"] = result.control.key
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.op}: {chosen.name} ({args.mode}, {len(neurons)} neurons, key {chosen.key}) over "
          f"{len(grid):,} prompts")
    for which, accuracy in result.summary().items():
        print(f"  accuracy {which:>8}: {accuracy:.3f}")
    print("results that lost most:")
    print(result.results_lost(5).to_string(index=False))
    return 0


def _interventions(args: argparse.Namespace) -> int:
    from ..capture.interventions import Intervention
    from ..store import Store

    store = Store(args.store)
    if args.action == "list":
        frame = store.interventions()
        if frame.empty:
            print("no saved intervention (add one with `interventions add --name N --ablate L3N12,...`)")
        for row in frame.itertuples():
            saved = Intervention.from_json(*store.load_intervention(row.key))
            print(f"{row.key}  {row.name or '-':<24} {saved.describe()}")
        return 0
    if args.action == "show":
        if not args.name:
            raise InputError("interventions show needs --name NAME (or a key)")
        print(json.dumps(store.load_intervention(args.name)[0], indent=1))
        return 0
    if not args.ablate:
        raise InputError("interventions add needs --ablate L3N12,... (and --name)")
    chosen = options.intervention(args, store)
    chosen = Intervention(chosen.steps, args.name or "")
    print(f"saved {store.save_intervention(chosen.to_json(), chosen.tensors())}: {chosen.describe()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neurolab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    model, store, grid = options.model_options(), options.store_options(), options.grid_options()
    importance, intervention, quiet = (options.importance_options(), options.intervention_options(),
                                       options.quiet_option())

    p = sub.add_parser("train", parents=[quiet], help="train the embedded arithmetic model (resumes its last state)")
    p.add_argument("--preset", choices=["default", "tiny"], default="default",
                   help="'default' is the shipped model (~20 min on 2 cores); 'tiny' runs in seconds")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--seed", type=int, help="seed for initialisation, the held-out split and batches")
    p.add_argument("--max-op", type=int, help="operands are 0 <= op < max_op (default: the preset's)")
    p.add_argument("--out", help="output folder (default: data/models/<name>)")
    p.add_argument("--state-dir", help="where resumable state is kept (default: .train-state/)")
    p.add_argument("--fresh", action="store_true", help="ignore any saved state and start from step 0")
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", parents=[model, intervention, store],
                       help="per-operator and non-math accuracy of a model (under an intervention)")
    p.add_argument("--max-op", type=int, default=100,
                   help="grid size for models neurolab did not train (default 100); trained ones use held-out pairs")
    p.add_argument("--sample", type=int, help="evaluate at most this many prompts per operator (seeded)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_eval)

    p = sub.add_parser("sweep", parents=[model, grid, importance, intervention, store, quiet],
                       help="record answers and neuron maps over an operator's operand grid into the store")
    p.add_argument("--op", choices=[*OPS, "all"], required=True, help="operator, or all four")
    p.add_argument("--neurons", default="auto",
                   help="which neurons: 'all', 'top' (top-N per layer by importance), 'top:N', 'none' (answers "
                        "only) or a list L3N12,L3N40; default 'auto': all unless that exceeds 4 GB, then top")
    p.add_argument("--top-n", type=int, default=200, help="N of 'top' (default 200, the paper's)")
    p.add_argument("--layers", default=None, help="layers of 'all'/'top': '2,3', '0-3' or 'all' (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (rows, disk) and compute nothing")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="prompts per batched trace (default: from the device's free memory, at most 4096); fixed "
                        "when a sweep is first created")
    p.add_argument("--remote", nargs="?", const=True, default=False,
                   help="run the traces on NDIF (NDIF_API_KEY from the environment); '--remote local' is "
                        "nnsight's local dry run of that path")
    p.add_argument("--out", default=None, help="also write the maps as .parquet/.csv (layer, neuron, op1, op2, k, kv)")
    p.set_defaults(run=_sweep)

    p = sub.add_parser("classify", parents=[model, grid, importance, intervention, store, quiet],
                       help="importance, top neurons per layer and their heuristics for one operator")
    p.add_argument("--op", choices=OPS, required=True)
    p.add_argument("--maps", choices=["K", "KV", "hybrid"], default="hybrid",
                   help="activation maps to judge heuristics on; hybrid: result ones on KV, operand ones on K")
    p.add_argument("--top-n", type=int, default=200, help="neurons per layer, by importance (default 200)")
    p.add_argument("--threshold", type=float, default=0.6, help="score a match needs (default 0.6)")
    p.add_argument("--layers", default=None, help="layers to classify (default: first heuristics layer .. last)")
    p.add_argument("--out", default=None, help="write every (layer, neuron, heuristic, score) row, matched or not, "
                                               "to .csv or .parquet")
    p.set_defaults(run=_classify)

    p = sub.add_parser("importance", parents=[model, grid, importance, intervention, store, quiet],
                       help="neuron importance for an operator by attribution and/or activation patching")
    p.add_argument("--op", choices=OPS, required=True)
    p.add_argument("--method", choices=["attribution", "activation", "both"], default="attribution",
                   help="activation patching is exact but costs a forward pass per neuron: small models only")
    p.add_argument("--layers", default=None, help="layers (default all)")
    p.add_argument("--out", default=None, help="write the per-neuron table to .csv or .parquet")
    p.set_defaults(run=_importance)

    p = sub.add_parser("export", parents=[store], help="write a store table or a SELECT query to .parquet or .csv")
    p.add_argument("source", help="a table or view (models, interventions, sweeps, prompts, value_blocks, "
                                  "importance, heuristic_scores, classification_runs, neuron_heuristics, "
                                  "neuron_values, activations) or a SELECT query")
    p.add_argument("out", help="output file, .parquet or .csv")
    p.set_defaults(run=_export)

    p = sub.add_parser("ablate", parents=[model, grid, store, quiet],
                       help="ablate neurons over an operator's grid: accuracy before, after and under a random control")
    p.add_argument("--op", choices=OPS, required=True)
    p.add_argument("--heuristic", default=None, help="the neurons the stored classification labelled with NAME")
    p.add_argument("--neurons", default=None, help="a list such as L3N12,L3N40")
    p.add_argument("--top-n", type=int, default=None, help="the layer's N most important neurons (with --layer)")
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--mode", choices=["zero", "mean"], default="zero",
                   help="zero (the paper's) or the neuron's mean over the operator's grid, at every position")
    p.add_argument("--control", choices=["random", "none"], default="random",
                   help="random: as many neurons per layer from the same layers' top-200 (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control")
    p.add_argument("--name", default=None, help="name to save the ablation under (listed by `interventions list`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_ablate)

    p = sub.add_parser("interventions", parents=[grid, intervention, store],
                       help="list, show or add saved interventions (ablations; weight edits come from the core)")
    p.add_argument("action", choices=["list", "show", "add"])
    p.add_argument("--name", default=None, help="name of the intervention to add or show")
    p.add_argument("--op", choices=OPS, default=None, help="operator whose grid a mean ablation averages over")
    p.set_defaults(run=_interventions)

    parents = {"model": model, "store": store, "grid": grid, "importance": importance, "intervention": intervention,
               "quiet": quiet}
    circuit.add_parsers(sub, parents)
    experiments.add_parsers(sub, parents)
    mathneuro.add_parsers(sub, parents)
    figures.add_parsers(sub, parents)
    dynamics.add_parsers(sub, parents)
    anatomy.add_parsers(sub, parents)

    p = sub.add_parser("info", parents=[model],
                       help="how neurolab sees a model: family, layers, neurons, hook names, fingerprint")
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NeurolabError as error:  # only neurolab's own errors: a bug keeps its traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
