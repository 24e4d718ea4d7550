"""What identifies a model's results: its weights (content or hub commit) and the dtype they run in.

Pure functions with no heavy imports, so the store can migrate old keys without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..keys import FINGERPRINT_SIZE, WEIGHT_FILE_SIZE, digest, stream_digest

_FULL_HASH_LIMIT = 512 * 2**20


def _chunks(path: Path) -> Iterator[bytes]:
    """The whole file; for files over 512 MB, size + safetensors header + first and last 64 MB (seconds, not
    minutes, and still changes whenever the weights do in practice)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            yield from iter(lambda: f.read(8 * 2**20), b"")
        else:
            yield str(size).encode()
            yield f.read(64 * 2**20)
            f.seek(size - 64 * 2**20)
            yield f.read()


def _file_digest(path: Path) -> str:
    return stream_digest(_chunks(path), size=WEIGHT_FILE_SIZE)


def fingerprint(folder: Path | None, config: dict, revision: str | None) -> str:
    """The weights' identity: a hash of the config and the weight/tokenizer files, or the hub commit."""
    portable = {k: v for k, v in config.items() if not k.startswith("_")}  # drops _name_or_path (a location)
    parts = [json.dumps(portable, sort_keys=True, default=str)]
    if revision:
        parts.append(revision)
    if folder is not None:
        for file in sorted(folder.iterdir()):
            if file.suffix == ".safetensors" or file.name.startswith("tokenizer"):
                parts += [file.name, _file_digest(file)]
    return digest(*parts, size=FINGERPRINT_SIZE)


def model_fingerprint(weights_fingerprint: str, dtype: str) -> str:
    """The key of every cached result: the weights' fingerprint (content or hub revision) and the dtype they ran in.

    A pure function of the two, so a store written before dtypes were keyed migrates without the model."""
    return digest(f"{weights_fingerprint}|{dtype}", size=FINGERPRINT_SIZE)
