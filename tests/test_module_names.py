"""Every neurolab module a string or docstring names exists: a renamed or moved module must not leave an error message
or a docstring pointing at a file that is not there.

Names are read from the string tokens (docstrings included, comments not) of every .py under neurolab/ and pages/
and of app.py, in three forms: a path ``neurolab/x/y.py``, a dotted name ``neurolab.x.y`` (which may end in
attributes: ``neurolab.store.Store.cached_frame``), and a relative Sphinx reference such as :mod:`.families`."""

from __future__ import annotations

import importlib
import importlib.util
import io
import re
import token
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "neurolab").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "app.py"])

PATH = re.compile(r"(?<![\w./-])neurolab/(?:\w+/)*\w+\.py\b")
DOTTED = re.compile(r"(?<![\w./-])neurolab(?:\.\w+)+")
RELATIVE = re.compile(r":[a-z]+:`~?(\.\w+(?:\.\w+)*)`")
#: ``neurolab.json`` (a trained model's metadata) and ``neurolab.duckdb`` (the store) are file names, not modules
FILE_SUFFIXES = {"json", "duckdb", "csv", "parquet", "npy", "safetensors", "toml", "txt", "md"}
STRING_TOKENS = {token.STRING, getattr(token, "FSTRING_MIDDLE", token.STRING)}  # 3.12 splits f-strings


@dataclass(frozen=True)
class Reference:
    file: Path
    line: int
    name: str
    module: str  # the module of the file that names it (relative names resolve against it)

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: {self.name}"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def references(path: Path, source: str | None = None) -> list[Reference]:
    """The neurolab modules the string tokens of a file name, each with its line."""
    source = path.read_text() if source is None else source
    module, found = _module_of(path), []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in STRING_TOKENS:
            continue
        for pattern in (PATH, DOTTED, RELATIVE):
            for match in pattern.finditer(tok.string):
                name = match.group(match.lastindex or 0)
                if pattern is DOTTED and name.count(".") == 1 and name.split(".")[1] in FILE_SUFFIXES:
                    continue
                line = tok.start[0] + tok.string.count("\n", 0, match.start())
                found.append(Reference(path, line, name, module))
    return found


def _resolves(dotted: str) -> bool:
    """A module, or a module followed by attributes (``neurolab.store.Store.cached_frame``)."""
    parts = dotted.split(".")
    obj, prefix = importlib.import_module(parts[0]), parts[0]
    for part in parts[1:]:
        prefix = f"{prefix}.{part}"
        if hasattr(obj, "__path__") and importlib.util.find_spec(prefix) is not None:
            obj = importlib.import_module(prefix)
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            return False
    return True


def exists(ref: Reference) -> bool:
    if ref.name.endswith(".py"):
        return (ROOT / ref.name).is_file()
    if ref.name.startswith("."):  # relative to the file's package, or an attribute of the file's module
        package = ref.module if (ref.file.name == "__init__.py") else ref.module.rpartition(".")[0]
        return any(_resolves(base + ref.name) for base in {package, ref.module} if base.startswith("neurolab"))
    return _resolves(ref.name)


def test_every_module_named_in_a_string_exists():
    found = [ref for path in SOURCES for ref in references(path)]
    stale = [str(ref) for ref in found if not exists(ref)]
    assert not stale, "strings name neurolab modules that do not exist:\n" + "\n".join(stale)


def test_the_scan_finds_each_form_and_skips_file_names():
    path = ROOT / "neurolab" / "heuristics" / "example.py"
    source = ('"""See :mod:`.families` and :func:`~neurolab.capture.trace.run`."""\n'
              '# neurolab.not_a_string.in_a_comment\n'
              'MESSAGE = ("one entry in neurolab/models/adapters.py, "\n'
              ' f"not neurolab/adapters.py; {x}: wrote neurolab.json to ~/.cache/neurolab/neurolab.duckdb")\n')
    found = {(ref.line, ref.name) for ref in references(path, source)}
    assert found == {(1, ".families"), (1, "neurolab.capture.trace.run"), (3, "neurolab/models/adapters.py"),
                     (4, "neurolab/adapters.py")}
    by_name = {ref.name: exists(ref) for ref in references(path, source)}
    assert by_name == {".families": True, "neurolab.capture.trace.run": True, "neurolab/models/adapters.py": True,
                       "neurolab/adapters.py": False}
    assert not exists(Reference(path, 1, "neurolab.capture.apply", "neurolab.heuristics.example"))
    assert not exists(Reference(path, 1, "neurolab.store.Store.no_such_method", "neurolab.heuristics.example"))
