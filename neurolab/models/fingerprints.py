"""What identifies a model's results: its weights (content or hub commit) and the dtype they run in.

Pure functions with no heavy imports, so the store can migrate old keys without loading a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_FULL_HASH_LIMIT = 512 * 2**20


def _file_digest(path: Path) -> str:
    """Content hash; for files over 512 MB, size + safetensors header + first and last 64 MB (seconds, not
    minutes, and still changes whenever the weights do in practice)."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(8 * 2**20), b""):
                h.update(chunk)
        else:
            h.update(str(size).encode())
            h.update(f.read(64 * 2**20))
            f.seek(size - 64 * 2**20)
            h.update(f.read())
    return h.hexdigest()


def fingerprint(folder: Path | None, config: dict, revision: str | None) -> str:
    """The weights' identity: a hash of the config and the weight/tokenizer files, or the hub commit."""
    h = hashlib.blake2b(digest_size=10)
    portable = {k: v for k, v in config.items() if not k.startswith("_")}  # drops _name_or_path (a location)
    h.update(json.dumps(portable, sort_keys=True, default=str).encode())
    if revision:
        h.update(revision.encode())
    if folder is not None:
        for file in sorted(folder.iterdir()):
            if file.suffix == ".safetensors" or file.name.startswith("tokenizer"):
                h.update(file.name.encode())
                h.update(_file_digest(file).encode())
    return h.hexdigest()


def model_fingerprint(weights_fingerprint: str, dtype: str) -> str:
    """The key of every cached result: the weights' fingerprint (content or hub revision) and the dtype they ran in.

    A pure function of the two, so a store written before dtypes were keyed migrates without the model."""
    return hashlib.blake2b(f"{weights_fingerprint}|{dtype}".encode(), digest_size=10).hexdigest()
