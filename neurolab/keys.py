"""The one hash behind every key neurolab stores (model fingerprints, analysis and intervention keys, data digests).

BLAKE2b, hex-encoded. Each stored key keeps the digest size it was first written with: a new size would be a new
key, orphaning every result already cached under the old one, so the sizes below are frozen, named once here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

#: a weight or tokenizer file's content hash, folded into the weights' fingerprint (so it keys every result)
WEIGHT_FILE_SIZE = 16
#: model fingerprints (the weights, and weights + dtype): the key every cached result carries
FINGERPRINT_SIZE = 10
#: the store's ``analyses`` keys (one Parquet table per key)
ANALYSIS_KEY_SIZE = 10
#: :attr:`Intervention.key`: names sweeps, stored interventions and every spec that mentions one
INTERVENTION_KEY_SIZE = 8
#: user data (sample files, uploads by content) and sample sets: part of MathNeuro's cached specs
DATA_DIGEST_SIZE = 12
#: a weight edit's mask (its content and shape): part of its intervention's key
MASK_DIGEST_SIZE = 12


def digest(*parts: bytes | str, size: int) -> str:
    """The hex digest of ``parts`` in order (str as UTF-8): the digest of their concatenation."""
    return stream_digest(parts, size=size)


def stream_digest(parts: Iterable[bytes | str], *, size: int) -> str:
    """:func:`digest` of parts produced one at a time (a large file's chunks never sit in memory together)."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def json_digest(obj: object, *, size: int) -> str:
    """The digest of ``obj``'s canonical JSON (sorted keys, compact; ``str`` for what JSON lacks, e.g. paths)."""
    return digest(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str), size=size)
