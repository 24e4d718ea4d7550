"""The command line: every long computation, runnable in batch, calling the same functions the pages call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from .. import paths
from ..errors import NeurolabError


def _train(args: argparse.Namespace) -> int:
    from ..train.training import PRESETS, TrainConfig, train

    config = TrainConfig.from_dict({**vars(PRESETS[args.preset]), **_overrides(args)})
    out = Path(args.out) if args.out else paths.MODELS_DIR / config.name
    bar = tqdm(total=config.steps, desc=f"train {config.name}", unit="step", disable=args.quiet)

    def progress(step: int, total: int, info: dict) -> None:
        bar.n = step
        bar.set_postfix({k: round(v, 3) for k, v in info.items()}, refresh=False)
        bar.refresh()

    metadata = train(config, out, Path(args.state_dir) if args.state_dir else paths.train_state_dir(),
                     fresh=args.fresh, progress=progress)
    bar.close()
    from ..train.modelcard import write_model_card

    card = write_model_card(out)
    final = metadata["history"][-1]
    print(f"saved {out} ({metadata['train_seconds'] / 60:.1f} min); held-out accuracy: "
          + ", ".join(f"{k} {final[k]:.3f}" for k in ("+", "-", "*", "/", "nonmath")) + f"; card: {card}")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in {"steps": args.steps, "seed": args.seed, "max_op": args.max_op}.items() if v is not None}


def _eval(args: argparse.Namespace) -> int:
    from ..analysis.evaluation import evaluate
    from ..models.loading import load_model

    model = load_model(args.model)
    result = evaluate(model, max_op=args.max_op, sample=args.sample)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0
    print(f"{model.name} ({model.adapter.family}, fingerprint {model.fingerprint}) on {result.split}")
    for key, score in result.scores.items():
        print(f"  {key:>8}  {score.accuracy:7.2%}  ({score.correct}/{score.total})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..models.loading import load_model

    for label, text in load_model(args.model).describe().items():
        print(f"{label:>26}  {text}")
    return 0


def _layers(text: str | None) -> list[int] | None:
    """``2,3`` or ``0-3`` or ``all``."""
    if text is None or text == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            layers.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise NeurolabError(f"--layers {text!r}: write layers like 2,3 or 0-3 or all") from None
    return layers


def _sweep(args: argparse.Namespace) -> int:
    from ..analysis.sweep import run_sweep
    from ..models.loading import load_model
    from ..store.connection import Store
    from ..tasks.arithmetic import OP_NAMES

    layers = _layers(args.layers)
    model = load_model(args.model)
    template = _grid_args(args)
    store = Store(args.store)
    ops = ["+", "-", "*", "/"] if args.op == "all" else [args.op]
    for op in ops:
        bar = tqdm(desc=f"sweep {op}", unit="prompt", disable=args.quiet)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = run_sweep(model, store, op, layers=layers, max_op=args.max_op, template=template,
                           chunk_size=args.chunk_size, progress=progress, remote=args.remote)
        bar.close()
        state = "already cached, nothing to compute" if result.cached else (
            f"computed {result.chunks_computed} of {result.chunks_total} chunks")
        print(f"{op}: sweep {result.sweep_id}, {result.n_prompts} prompts, layers "
              f"{','.join(map(str, result.layers))}: {state} ({store.path})")
        if args.out:
            out = Path(args.out)
            if len(ops) > 1:
                out = out.with_name(f"{out.stem}-{OP_NAMES[op]}{out.suffix}")
            store.export(
                f"SELECT op1, op2, answer, correct, layer, neuron, k, kv FROM activations "
                f"WHERE fingerprint = '{model.fingerprint}' AND op = '{op}' AND template = "
                f"'{template.key.replace(chr(39), chr(39) * 2)}' AND max_op = {args.max_op} "
                f"AND layer IN ({','.join(map(str, result.layers))}) ORDER BY layer, neuron, op1, op2", out)
            print(f"wrote {out}")
    return 0


def _grid_args(args: argparse.Namespace):
    from ..tasks.grid import PromptTemplate, parse_template

    template = parse_template(args.template)
    if args.fewshot is not None:
        template = PromptTemplate(template.format, fewshot=args.fewshot)
    return template


def _classify(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.classification import ClassifySettings, classify_operator
    from ..analysis.value_lens import agreement
    from ..models.loading import load_model
    from ..store.connection import Store

    model = load_model(args.model)
    store = Store(args.store)
    settings = ClassifySettings(maps=args.maps, top_n=args.top_n, threshold=args.threshold,
                                n_prompts=args.prompts, seed=args.seed)
    bar = tqdm(total=100, desc="classify", disable=args.quiet, bar_format="{desc}: {percentage:3.0f}%|{bar}|")

    def progress(stage: str, fraction: float) -> None:
        bar.set_description(stage)
        bar.n = round(100 * fraction)
        bar.refresh()

    result = classify_operator(model, store, args.op, args.max_op, _grid_args(args), settings,
                               layers=_layers(args.layers), progress=progress)
    bar.close()
    pd.set_option("display.width", 160)
    print(f"{args.op}: first heuristics layer {result.first_layer} (MLP output's promotion of the answer):")
    print(result.evidence.to_string(index=False))
    print(f"\ntop {settings.top_n} neurons per layer ({settings.maps} maps, threshold {settings.threshold}): "
          "how many match at least one heuristic, by group")
    print(result.coverage().to_string(index=False))
    direct = result.matched[result.matched["direct"]]
    prompts = store.prompts(result.sweep_id)
    checked = agreement(model, direct, prompts["answer"].to_numpy())
    if len(checked):
        print(f"\nvalue vectors of direct heuristic neurons: {checked['agrees'].mean():.1%} of {len(checked)} "
              f"(neuron, heuristic) matches promote mostly the heuristic's results "
              f"(mean share {checked['share'].mean():.2f} vs chance {checked['chance'].mean():.2f})")
    if args.out:
        print(f"wrote {_write_frame(result.scores, args.out)} ({len(result.scores):,} scores)")
    return 0


def _importance(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.importance import activation_patching, attribution_patching, prompt_pairs
    from ..analysis.sweep import run_sweep
    from ..models.loading import load_model
    from ..store.connection import Store

    model = load_model(args.model)
    store = Store(args.store)
    sweep = run_sweep(model, store, args.op, layers=_layers(args.layers), max_op=args.max_op,
                      template=_grid_args(args))
    pairs = prompt_pairs(model, store.prompts(sweep.sweep_id), args.prompts, args.seed)
    layers = _layers(args.layers)
    frames = []
    if args.method in ("attribution", "both"):
        frames.append(attribution_patching(model, pairs, layers))
    if args.method in ("activation", "both"):
        bar = tqdm(desc="activation patching", unit="neuron", disable=args.quiet)

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        frames.append(activation_patching(model, pairs, layers, progress=progress))
        bar.close()
    for frame in frames:
        store.write_importance(sweep.sweep_id, args.prompts, args.seed, frame)
    table = pd.concat(frames)
    for method, part in table.groupby("method"):
        print(f"{method} patching, {len(pairs.clean)} prompt pairs; top 5 neurons per layer (mean + std):")
        for layer, rows in part.groupby("layer"):
            best = rows.sort_values("rank").head(5)
            print(f"  layer {layer}: " + ", ".join(f"L{layer}N{n} {v:.4f}" for n, v in zip(best["neuron"], best["score"])))
    if args.method == "both":
        wide = table.pivot_table(index=["layer", "neuron"], columns="method", values="mean")
        print(f"correlation of mean effects, attribution vs activation: "
              f"{wide['attribution'].corr(wide['activation']):.3f} (Pearson), "
              f"{wide['attribution'].rank().corr(wide['activation'].rank()):.3f} (Spearman)")
    if args.out:
        print(f"wrote {_write_frame(table, args.out)}")
    return 0


def _write_frame(frame, out: str) -> Path:
    path = Path(out)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise NeurolabError(f"--out must end in .parquet or .csv, not {path.suffix or 'nothing'}")
    return path


def _export(args: argparse.Namespace) -> int:
    from ..store.connection import Store

    print(f"wrote {Store(args.store).export(args.source, args.out)}")
    return 0


def _grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-op", type=int, default=100, help="operands are 0 <= op < max_op (default 100)")
    p.add_argument("--template", default=None,
                   help="'plain' ({op1}{op}{op2}=, default), 'spaced', 'fewshot', or a custom format with the "
                        "fields {op1} {op} {op2}, e.g. 'Q: {op1} {op} {op2} = '")
    p.add_argument("--fewshot", type=int, default=None, help="prepend this many solved examples of the operator")


def _importance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", type=int, default=50, help="correct prompts (with counterfactuals) to attribute over")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing prompts and counterfactuals")


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None,
                   help="DuckDB file (default: $NEUROLAB_STORE or ~/.cache/neurolab/neurolab.duckdb)")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="Hugging Face id or local folder (default: the embedded model, also named 'embedded')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neurolab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the embedded arithmetic model (resumes from its last state)")
    p.add_argument("--preset", choices=["default", "tiny"], default="default",
                   help="'default' is the shipped model (~20 min on 2 cores); 'tiny' runs in seconds")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--seed", type=int, help="seed for initialisation, the held-out split and batches")
    p.add_argument("--max-op", type=int, help="operands are 0 <= op < max_op (default: the preset's)")
    p.add_argument("--out", help="output folder (default: data/models/<name>)")
    p.add_argument("--state-dir", help="where resumable state is kept (default: .train-state/)")
    p.add_argument("--fresh", action="store_true", help="ignore any saved state and start from step 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", help="per-operator and non-math accuracy of a model")
    _model_arg(p)
    p.add_argument("--max-op", type=int, default=100,
                   help="grid size for models neurolab did not train (default 100); trained ones use held-out pairs")
    p.add_argument("--sample", type=int, help="evaluate at most this many prompts per operator (seeded)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_eval)

    p = sub.add_parser("sweep", help="record answers and K/KV maps over an operator's operand grid into the store")
    _model_arg(p)
    p.add_argument("--op", choices=["+", "-", "*", "/", "all"], required=True, help="operator, or all four")
    p.add_argument("--layers", default=None, help="layers to record: '2,3', '0-3' or 'all' (default: all)")
    _grid_options(p)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="prompts per batched trace (default: up to 4096, bounded by a 256 MB activation budget); "
                        "fixed when a sweep is first created")
    p.add_argument("--remote", nargs="?", const=True, default=False,
                   help="run the traces on NDIF (NDIF_API_KEY from the environment); '--remote local' is "
                        "nnsight's local dry run of that path")
    p.add_argument("--out", default=None, help="also write the maps as .parquet/.csv (op1, op2, layer, neuron, k, kv)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _store_arg(p)
    p.set_defaults(run=_sweep)

    p = sub.add_parser("classify", help="importance, top neurons per layer and their heuristics for one operator")
    _model_arg(p)
    p.add_argument("--op", choices=["+", "-", "*", "/"], required=True)
    p.add_argument("--maps", choices=["K", "KV", "hybrid"], default="hybrid",
                   help="activation maps to judge heuristics on; hybrid: result ones on KV, operand ones on K")
    p.add_argument("--top-n", type=int, default=200, help="neurons per layer, by importance (default 200)")
    p.add_argument("--threshold", type=float, default=0.6, help="score a match needs (default 0.6)")
    p.add_argument("--layers", default=None, help="layers to classify (default: first heuristics layer .. last)")
    _grid_options(p)
    _importance_options(p)
    p.add_argument("--out", default=None, help="write every (layer, neuron, heuristic, score) row, matched or not, "
                                               "to .csv or .parquet")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _store_arg(p)
    p.set_defaults(run=_classify)

    p = sub.add_parser("importance", help="neuron importance for an operator by attribution and/or activation "
                                          "patching")
    _model_arg(p)
    p.add_argument("--op", choices=["+", "-", "*", "/"], required=True)
    p.add_argument("--method", choices=["attribution", "activation", "both"], default="attribution",
                   help="activation patching is exact but costs a forward pass per neuron: small models only")
    p.add_argument("--layers", default=None, help="layers (default all)")
    _grid_options(p)
    _importance_options(p)
    p.add_argument("--out", default=None, help="write the per-neuron table to .csv or .parquet")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _store_arg(p)
    p.set_defaults(run=_importance)

    p = sub.add_parser("export", help="write a store table or a SELECT query to .parquet or .csv")
    p.add_argument("source", help="a table or view (models, sweeps, prompts, neuron_values, sweep_progress, "
                                  "importance, heuristic_scores, classification_runs, activations, "
                                  "neuron_heuristics) or a SELECT query")
    p.add_argument("out", help="output file, .parquet or .csv")
    _store_arg(p)
    p.set_defaults(run=_export)

    p = sub.add_parser("info", help="how neurolab sees a model: family, layers, neurons, hook names, fingerprint")
    _model_arg(p)
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (NeurolabError, ValueError) as error:  # the core raises ValueError only with a message for the user
        print(f"error: {error}", file=sys.stderr)
        return 2
