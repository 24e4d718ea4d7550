"""Every command the README shows runs: the ``python -m neurolab`` calls of README.md's ```bash blocks, parsed from the
README itself so that a new example is tested the day it is written.

They run in README order (later ones read what earlier ones stored), each as a subprocess of this interpreter (the
venv's python), against one temporary store, offline, in a temporary working directory (where their output files
land). A command that would be slow here or needs what is not here runs as :data:`SUBSTITUTIONS` says; any other
runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


class Substitution(NamedTuple):
    instead: str  # a re.sub replacement: {tmp} the working directory, {tiny} the tiny model, {root} the checkout
    why: str


#: README pattern (a regex over the arguments after ``python -m neurolab``) -> what runs instead, and why
SUBSTITUTIONS = {
    r"^train$": Substitution("train --preset tiny --out {tmp}/trained --state-dir {tmp}/train-state",
                             "the real recipe takes ~20 min; nothing may land in the checkout"),
    r"--model EleutherAI/pythia-70m --max-op \d+": Substitution(
        "--model {tiny} --max-op 20", "no hub at test time: a tiny random-weight GPT-NeoX (safetensors), small grids"),
    r"^sweep --op all$": Substitution(r"\g<0> --max-op 50",
                                      "four 100x100 grids of every neuron; later commands sweep what they use"),
    r"--out maps.parquet": Substitution(r"\g<0> --max-op 20", "the maps file has a row per neuron and prompt: 10 M"),
    r"--method both": Substitution(r"\g<0> --layers 3 --prompts 10",
                                   "exact activation patching is a pass per neuron and prompt: ~35 s as written"),
    r"^knockout --kind heuristic.*": Substitution(r"\g<0> --max-prompts 100",
                                                  "one ablated pass per heuristic: 100 prompts each, not 10,000"),
    r"^knockout --kind prompt.*": Substitution(r"\g<0> --ns 0-100:50", "3 neuron counts instead of 21"),
    r"^mathneuro --samples 100 --top-k \S+": Substitution(
        "mathneuro --samples 20 --top-k 0.01 --max-op 20",
        "each K evaluates three weight edits over every 100x100 grid: ~4 min as written"),
    r"^figure --all --op \+": Substitution(r"\g<0> --max-op 20",
                                            "every kind of the 100x100 grid, knockouts included: ~3 min as written"),
    r"^dynamics --series embedded": Substitution(
        "dynamics --series {root}/data/models/neurolab-arith/checkpoints/step-01000,{root}/data/models/neurolab-arith "
        "--max-op 30", "eight checkpoints over four 100x100 grids: ~3 min as written; two checkpoints, small grids"),
    r"^robustness --op \+": Substitution(r"\g<0> --max-op 30", "four templates' classification of the 100x100 grid"),
    r"^anatomy --op \+ --layers 3 --fit --wiring": Substitution(r"\g<0> --max-op 30",
                                                                 "a helix fit and patch-the-fit over the 100x100 grid"),
    r"^mathneuro-study .*": Substitution(
        r"\g<0> --prompts 50 --pairs 2 --factors 1.1 --top-k 0.03 --samples 20 --conditions step-01000",
        "each study is minutes of full-grid evaluations: small sizes, the same code"),
    r"^mathneuro --math .*": Substitution(r"\g<0> --top-k 0.01 --max-op 20",
                                          "the default eight Ks, three edits each, over every 100x100 grid"),
}

#: files the README's commands read, written to the working directory in the documented formats (math: JSONL with
#: question and answer; non-math: CSV with text), in the embedded model's vocabulary
INPUTS = {
    "gsm8k.jsonl": '{"question": "23+45=", "answer": "68"}\n{"question": "9*9=", "answer": "81"}\n',
    "race.csv": "text\ncapital of france is paris\nopposite of hot is cold\n",
}

#: command pattern -> what its output must show (a command no pattern matches must print something)
EXPECTED = {
    r"^info": r"fingerprint",
    r"^eval --json": r'"intervention": "none"',
    r"^eval --intervention": r"nonmath .*%",
    r"--dry-run": r"[\d,]+ prompts x [\d,]+ neurons in \d+ layers",
    r"^sweep (?!.*--dry-run)": r"sweep \d+, [\d,]+ prompts",
    r"^interventions add": r"saved \w+: kill2",
    r"^export": r"wrote ",
    r"^importance .*--method both": r"correlation of mean effects, attribution vs activation",
    r"^classify": r"first heuristics layer \d+",
    r"^ablate (?!.*--json)": r"accuracy +after: \d",
    r"^ablate .*--json": r'"accuracy_after"',
    r"^knockout --kind heuristic": r"\d+ heuristics with >= \d+ neurons",
    r"^knockout --kind prompt": r"accuracy of \d+ correct prompts",
    r"^failures": r"correct +\d+ ",
    r"^circuit": r"circuit of '\+', rule op1",
    r"^mathneuro ": r"MathNeuro on ",
    r"^mathneuro-study (scaling|single|frontier)": r"scaling|single|frontier",
    r"^train": r"saved .*card: ",
    r"^figure (?!--all)": r"wrote \S+\.csv, \S+\.provenance\.json, \S+\.(svg|pdf|png|html)",
    r"^graph": r"wrote .*\.json",
}


def readme_commands(text: str | None = None) -> list[str]:
    """The arguments of every ``python -m neurolab`` call in the README's ```bash blocks, in order (``a && b`` gives
    two), as one shell-quoted string each, comments dropped."""
    text = README.read_text() if text is None else text
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if len(words) > 2 and words[0].endswith("python") and words[1:3] == ["-m", "neurolab"]:
                    found.append(shlex.join(words[3:]))
    return found


def as_run(command: str, tmp: Path, tiny: Path) -> str:
    for pattern, sub in SUBSTITUTIONS.items():
        command = re.sub(pattern, sub.instead.format(tmp=tmp, tiny=tiny, root=ROOT), command)
    return command


def written(args: list[str]) -> list[str]:
    """The files a command says it writes: every ``--out``, and export's second argument."""
    outs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--out"]
    return [*outs, args[2]] if args[0] == "export" else outs


COMMANDS = readme_commands()


class Lab(NamedTuple):
    cwd: Path
    tiny: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    from .tiny_models import save_tiny_model

    cwd = tmp_path_factory.mktemp("readme")
    tiny = save_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt-neox", "gpt-neox")
    for name, content in INPUTS.items():
        (cwd / name).write_text(content)
    env = {**os.environ, "NEUROLAB_STORE": str(cwd / "store.duckdb"), "HF_HUB_OFFLINE": "1",
           "NEUROLAB_TRAIN_STATE": str(cwd / "train-state"),  # never the checkout's, whatever the README says
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return Lab(cwd, tiny, env)


def test_the_readme_shows_the_commands():
    assert len(COMMANDS) >= 20 and COMMANDS[0] == "info"
    block = ("```bash\n.venv/bin/python -m neurolab interventions add --name k && python -m neurolab eval --x  # y\n"
             "make install\n```\n")
    assert readme_commands(block) == ["interventions add --name k", "eval --x"]


@pytest.mark.parametrize(("neurons", "top_n"), [("top:7", 7), ("top:7 --top-n 3", 7), ("top --top-n 3", 3)])
def test_top_n_of_neurons_wins_over_the_top_n_option(neurons, top_n):
    """The README's ``--neurons top:200`` crashed: its N and ``--top-n``'s default both reached the selection."""
    from neurolab.cli import build_parser
    from neurolab.cli.commands import _selection

    assert _selection(build_parser().parse_args(["sweep", "--op", "+", "--neurons", *neurons.split()])).top_n == top_n


@pytest.mark.parametrize("pattern", [*SUBSTITUTIONS, *EXPECTED])
def test_every_rule_still_matches_a_readme_command(pattern):
    assert any(re.search(pattern, command) for command in COMMANDS), f"no README command matches {pattern!r}"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, lab):
    args = shlex.split(as_run(command, lab.cwd, lab.tiny))
    done = subprocess.run([sys.executable, "-m", "neurolab", *args], cwd=lab.cwd, env=lab.env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    expected = [want for pattern, want in EXPECTED.items() if re.search(pattern, command)] or [r"\S"]
    for want in expected:
        assert re.search(want, done.stdout), f"{shlex.join(args)} printed no {want!r}:\n{done.stdout[-3000:]}"
    for out in written(args):
        assert (lab.cwd / out).exists(), f"{shlex.join(args)} did not write {out}"
