"""Options every command shares, as argparse parents, and the one place that turns them into core objects.

Building the parser imports nothing heavy (no torch, transformers, nnsight), so ``--help`` and a mistyped flag answer
at once: the core is imported inside the functions that use it, and the few choices argparse needs up front are
copies of the core's constants (tests/test_cli_startup.py checks that they agree)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..capture.interventions import Intervention
    from ..tasks.grid import PromptTemplate

OPS = ["+", "-", "*", "/"]
#: ``neurolab.capture.interventions.ABLATION_MODES``
ABLATION_MODES = ("zero", "mean", "constant")
#: ``neurolab.models.devices.DEVICES`` and the names of its ``DTYPES``
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--model", default=None,
                   help="Hugging Face id or local folder (default: the embedded model, also named 'embedded')")
    p.add_argument("--device", default="auto", help=f"{', '.join(DEVICES)} or cuda:N (default auto: a GPU if any)")
    p.add_argument("--dtype", default="auto",
                   help=f"auto (float32 on CPU, bfloat16 on GPU), {', '.join(DTYPES)}; results are keyed by it")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit (Pythia's checkpoints: step1000 ...)")
    p.add_argument("--device-map", default=None,
                   help="'auto' spreads a model too large for one GPU over the machine's GPUs (accelerate)")
    return p


def store_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--store", default=None,
                   help="DuckDB file (default: $NEUROLAB_STORE or ~/.cache/neurolab/neurolab.duckdb); neuron "
                        "values live in <file>.values/ beside it")
    return p


def grid_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--max-op", type=int, default=100, help="operands are 0 <= op < max_op (default 100)")
    p.add_argument("--template", default=None,
                   help="'plain' ({op1}{op}{op2}=, default), 'spaced', 'fewshot', or a custom format with the "
                        "fields {op1} {op} {op2}, e.g. 'Q: {op1} {op} {op2} = '")
    p.add_argument("--fewshot", type=int, default=None, help="prepend this many solved examples of the operator")
    return p


def importance_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--prompts", type=int, default=50, help="correct prompts (with counterfactuals) to attribute over")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing prompts and counterfactuals")
    return p


def intervention_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--intervention", default=None,
                   help="a saved intervention (name or key, see `interventions list`) or a JSON file; results are "
                        "keyed by it")
    p.add_argument("--ablate", default=None, help="neurons to ablate, e.g. L3N12,L3N40 (added after --intervention)")
    p.add_argument("--ablate-mode", choices=ABLATION_MODES, default="zero",
                   help="zero (the paper's), mean over the operator's grid (of --op and --max-op), or constant")
    p.add_argument("--ablate-value", type=float, default=0.0, help="the constant of --ablate-mode constant")
    return p


def quiet_option() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def load(args: argparse.Namespace):
    """The model the options name, loaded straight into its device and dtype."""
    from ..models.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, revision=args.revision,
                      device_map=args.device_map)


def context(args: argparse.Namespace, model=None):
    """(model, store, intervention) as the options name them: what every analysis command starts from."""
    from ..store import Store

    store = Store(args.store)
    return model or load(args), store, intervention(args, store)


def template(args: argparse.Namespace) -> PromptTemplate:
    from ..tasks.grid import PromptTemplate, parse_template

    chosen = parse_template(args.template)
    if args.fewshot is not None:
        chosen = PromptTemplate(chosen.format, fewshot=args.fewshot)
    return chosen


def layers(text: str | None) -> list[int] | None:
    """``2,3`` or ``0-3`` or ``all`` (None)."""
    if text is None or text == "all":
        return None
    found: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            found.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise InputError(f"--layers {text!r}: write layers like 2,3 or 0-3 or all") from None
    return found


def intervention(args: argparse.Namespace, store) -> Intervention:
    """``--intervention`` (saved, or a JSON file with its masks beside it) then ``--ablate``; clean when neither."""
    from ..capture.interventions import CLEAN, GridRef, Intervention, NeuronAblation, parse_neurons

    chosen = CLEAN
    if args.intervention:
        path = Path(args.intervention)
        if path.suffix == ".json" and path.exists():
            try:
                chosen = Intervention.from_json(json.loads(path.read_text()))
            except json.JSONDecodeError as error:
                raise InputError(f"{path} is not JSON: {error}") from None
        else:
            chosen = Intervention.from_json(*store.load_intervention(args.intervention))
    if args.ablate:
        grid = None
        if args.ablate_mode == "mean":
            op = getattr(args, "op", None)
            if op in (None, "all"):
                raise InputError("--ablate-mode mean averages over one operator's grid: give --op + (or - * /)")
            grid = GridRef(op, args.max_op, template(args).format, template(args).fewshot, template(args).seed)
        step = NeuronAblation(parse_neurons(args.ablate), args.ablate_mode, args.ablate_value, grid)
        chosen = chosen + Intervention((step,))
    return chosen


def write_frame(frame, out: str | Path) -> Path:
    """A result table to ``.csv`` or ``.parquet`` (what every ``--out`` takes)."""
    path = Path(out)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise InputError(f"--out must end in .parquet or .csv, not {path.suffix or 'nothing'}")
    return path
