"""Sample texts for MathNeuro: math samples (whose weights to isolate) and non-math samples (the control).

Built in, for the embedded model: math texts exactly as the model was trained (``"{a}{op}{b}={r}"``, e.g.
``23+45=68``; operators in turn ``+ - * /``, operand pairs drawn with a seed from each operator's valid grid), and
non-math texts from the language task (``prompt + " " + answer``, e.g. ``capital of spain is madrid``), drawn
from the sample half of its held-out split (:func:`~neurolab.tasks.splits.language_split`, seed
:data:`SPLIT_SEED`), so MathNeuro's non-math accuracy is measured on facts it never protected.

User files, for any model:

- math: CSV or JSONL with the columns ``question`` and ``answer`` (text = question + " " + answer, GSM8K-style) or
  a column ``text``;
- non-math: CSV or JSONL with a column ``text`` (RACE/MMLU-style passages).

Samples are taken in file order (the first N) unless ``shuffle`` (seeded). A file of the wrong shape raises an
:class:`~neurolab.errors.InputError` naming the expected columns.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..keys import DATA_DIGEST_SIZE, digest
from .arithmetic import OPERATORS, answer, valid_pairs
from .language import facts
from .splits import LANGUAGE_SPLIT, language_split

MATH_COLUMNS = "'question' and 'answer', or 'text'"
GENERAL_COLUMNS = "'text'"
#: The language split every built-in MathNeuro run uses (its samples half as non-math samples).
SPLIT_SEED = 0


@dataclass(frozen=True)
class SampleSet:
    """Math and non-math texts, and ``spec``: everything they depend on (for cache keys)."""

    math: tuple[str, ...]
    general: tuple[str, ...]
    spec: dict = field(default_factory=dict)


def builtin_math(n: int, seed: int = 0, max_op: int = 100, max_single_token: int = 999) -> list[str]:
    """``n`` texts ``"{a}{op}{b}={r}"``: operators in turn, a seeded operand pair of that operator's grid each."""
    rng = random.Random(seed)
    pairs = {op: valid_pairs(op, max_op, max_single_token) for op in OPERATORS}
    texts = []
    for i in range(n):
        op = OPERATORS[i % len(OPERATORS)]
        a, b = rng.choice(pairs[op])
        texts.append(f"{a}{op}{b}={answer(a, op, b)}")
    return texts


def builtin_general(n: int, seed: int = 0, split_seed: int | None = None) -> list[str]:
    """``n`` language-task facts as ``prompt + " " + answer``: all of them (in order) when ``n`` covers them, else a
    seeded sample (in the facts' order). With ``split_seed``, drawn from the sample half of
    :func:`~neurolab.tasks.splits.language_split` only (what MathNeuro uses: the other half is never protected)."""
    pool = facts() if split_seed is None else language_split(split_seed)[0]
    texts = [f"{f.prompt} {f.answer}" for f in pool]
    if n >= len(texts):
        return texts
    chosen = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in chosen]


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            return pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype=False)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as error:
        raise InputError(f"{path} cannot be read: {error}") from None
    raise InputError(f"{path}: give a .csv or .jsonl file")


def read_texts(path: str | Path, kind: str) -> list[str]:
    """The texts of a user file; ``kind`` is ``math`` (columns question/answer or text) or ``general`` (text)."""
    path = Path(path)
    frame = _read_table(path)
    columns = set(frame.columns)
    if kind == "math" and {"question", "answer"} <= columns:
        texts = [f"{q} {a}" for q, a in zip(frame["question"].astype(str), frame["answer"].astype(str))]
    elif "text" in columns:
        texts = frame["text"].astype(str).tolist()
    else:
        expected = MATH_COLUMNS if kind == "math" else GENERAL_COLUMNS
        raise InputError(f"{path}: a {kind} file needs the columns {expected}; it has "
                         f"{', '.join(map(str, frame.columns)) or 'none'}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError(f"{path}: no non-empty {kind} samples")
    return texts


def file_digest(path: str | Path) -> str:
    return digest(Path(path).read_bytes(), size=DATA_DIGEST_SIZE)


def _take(texts: list[str], n: int, shuffle: bool, seed: int) -> list[str]:
    texts = list(texts)
    if shuffle:
        random.Random(seed).shuffle(texts)
    return texts[:n]


def load_samples(math_file: str | Path | None = None, general_file: str | Path | None = None, n: int = 100,
                 seed: int = 0, shuffle: bool = False, single: bool = False, n_general: int | None = None,
                 max_single_token: int = 999) -> SampleSet:
    """Math and non-math samples: user files where given, else the built-in ones. ``single``: one of each (the
    paper's single-sample mode); ``n_general`` defaults to ``n``."""
    if n < 1:
        raise InputError("--samples must be at least 1")
    n_math = 1 if single else n
    n_gen = 1 if single else (n_general or n)
    spec: dict = {"n_math": n_math, "n_general": n_gen, "seed": seed, "shuffle": shuffle}
    if math_file:
        math = _take(read_texts(math_file, "math"), n_math, shuffle, seed)
        spec["math"] = {"file": Path(math_file).name, "digest": file_digest(math_file)}
    else:
        math = builtin_math(n_math, seed, max_single_token=max_single_token)
        spec["math"] = "builtin"
    if general_file:
        general = _take(read_texts(general_file, "general"), n_gen, shuffle, seed)
        spec["general"] = {"file": Path(general_file).name, "digest": file_digest(general_file)}
    else:
        general = builtin_general(n_gen, seed, split_seed=SPLIT_SEED)
        spec["general"] = {"builtin": LANGUAGE_SPLIT, "split_seed": SPLIT_SEED}
    # json's default separators, not json_digest's canonical form: the digest specs stored so far carry
    spec["texts"] = digest(json.dumps([math, general]), size=DATA_DIGEST_SIZE)
    return SampleSet(tuple(math), tuple(general), spec)
