"""The held-out split of a model neurolab trained: written beside its weights, read by evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from .arithmetic import OPERATORS

METADATA_FILE = "neurolab.json"


def heldout_pairs(folder: Path) -> dict[str, list[tuple[int, int]]] | None:
    """The held-out operand pairs saved by ``python -m neurolab train``, or None for a model it did not train."""
    meta = folder / METADATA_FILE
    if not meta.exists():
        return None
    pairs = json.loads(meta.read_text())["heldout_pairs"]
    return {op: [tuple(p) for p in pairs[op]] for op in OPERATORS}
