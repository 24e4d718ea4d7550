"""The CLI answers ``--help`` and a mistyped flag at once: building and parsing its arguments imports no torch,
transformers or nnsight (those take seconds); each command imports what it uses when it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "nnsight")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def neurolab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurolab", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=120)


def test_help_lists_every_command():
    done = neurolab("--help")
    assert done.returncode == 0
    for command in ("train", "eval", "info", "sweep", "export", "importance", "classify", "interventions", "ablate",
                    "knockout", "failures", "circuit", "mathneuro", "figure", "graph", "dynamics", "robustness",
                    "anatomy"):
        assert command in done.stdout


def test_the_help_says_the_fdr_the_atlas_uses():
    """``dynamics --help`` names the FDR without importing the analysis (a copy): the copy must stay equal."""
    from neurolab.analysis.significance import FDR
    from neurolab.cli import dynamics

    assert dynamics.FDR == FDR


def test_a_command_help_shows_its_options():
    done = neurolab("sweep", "--help")
    assert done.returncode == 0 and "--neurons" in done.stdout and "--dry-run" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "--op", "+", "--bogus"], "python -m neurolab: error: unrecognized arguments: --bogus"),
    (["sweep", "--bogus"], "python -m neurolab sweep: error: the following arguments are required: --op"),
    (["sweep", "--op", "%"], "python -m neurolab sweep: error: argument --op: invalid choice: '%'"),
    (["circuit", "--op", "+", "--rule", "op3"], "python -m neurolab circuit: error: argument --rule: invalid choice"),
])
def test_a_mistyped_argument_is_a_clear_argparse_error(args, message):
    done = neurolab(*args)
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m neurolab") and message in done.stderr


def test_parsing_imports_nothing_heavy():
    script = f"""if True:
        import contextlib, io, sys
        from neurolab.cli import build_parser
        parser = build_parser()
        for argv in (["--help"], ["sweep", "--help"], ["sweep", "--bogus"], ["sweep", "--op", "+"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    parser.parse_args(argv)
                except SystemExit:
                    pass
        print(" ".join(name for name in {HEAVY} if name in sys.modules))
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"building and parsing the CLI imported {done.stdout.strip()}"


def test_the_parsers_choices_are_the_cores():
    """The CLI copies the few constants argparse needs up front rather than import the core for them."""
    from neurolab.analysis import circuit
    from neurolab.capture import interventions, patching
    from neurolab.cli import circuit as circuit_cli
    from neurolab.cli import options
    from neurolab.models import devices
    from neurolab.tasks.arithmetic import OPERATORS

    assert options.ABLATION_MODES == interventions.ABLATION_MODES
    assert options.DEVICES == devices.DEVICES and options.DTYPES == tuple(devices.DTYPES)
    assert circuit_cli.RULES == circuit.RULES and circuit_cli.METRICS == patching.METRICS
    assert options.OPS == list(OPERATORS)
