"""The command line: every long computation, runnable in batch, calling the same functions the pages call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from . import paths
from .errors import NeurolabError


def _train(args: argparse.Namespace) -> int:
    from .training import PRESETS, TrainConfig, train

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
    from .modelcard import write_model_card

    card = write_model_card(out)
    final = metadata["history"][-1]
    print(f"saved {out} ({metadata['train_seconds'] / 60:.1f} min); held-out accuracy: "
          + ", ".join(f"{k} {final[k]:.3f}" for k in ("+", "-", "*", "/", "nonmath")) + f"; card: {card}")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in {"steps": args.steps, "seed": args.seed, "max_op": args.max_op}.items() if v is not None}


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .model import load_model

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
    from .model import load_model

    for label, text in load_model(args.model).describe().items():
        print(f"{label:>26}  {text}")
    return 0


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

    p = sub.add_parser("info", help="how neurolab sees a model: family, layers, neurons, hook names, fingerprint")
    _model_arg(p)
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NeurolabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
