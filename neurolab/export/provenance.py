"""How a figure or table was made, precisely enough to make it again (``python -m neurolab figure --from FILE``).

A :class:`Provenance` names the model (name as the user wrote it, fingerprint, dtype, device, revision), the figure's
``kind`` and its ``selection`` (the options of ``python -m neurolab figure KIND``: op, max_op, template, neuron, ...),
the active intervention (its key and JSON spec; weight-edit masks are found in the store by the digests the spec
lists), the analysis parameters, neurolab's version and git commit, and the time. It is written beside every export
as ``<stem>.provenance.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .. import __version__
from ..capture.interventions import Intervention
from ..errors import InputError
from ..models.loading import LoadedModel

FORMAT = "neurolab-provenance/1"


@cache
def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files differ from it), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class Provenance:
    """Everything a figure depends on; ``selection`` holds what :mod:`neurolab.export.kinds` needs to rebuild it."""

    kind: str
    selection: dict[str, Any]
    model: dict[str, Any]
    intervention: dict[str, Any] | None = None  # {"key": ..., "spec": Intervention.to_json()}; None: clean model
    params: dict[str, Any] = field(default_factory=dict)  # the analysis' own settings (seeds, thresholds, ...)
    neurolab: dict[str, Any] = field(default_factory=lambda: {"version": __version__, "commit": git_commit()})
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    format: str = FORMAT

    @classmethod
    def of(cls, kind: str, model: LoadedModel, selection: dict[str, Any],
           intervention: Intervention | None = None, params: dict[str, Any] | None = None) -> Provenance:
        """The provenance of a ``kind`` figure of ``model`` under ``intervention`` (None or clean: none)."""
        return cls(
            kind=kind,
            selection={k: v for k, v in selection.items() if v is not None},
            model={"name": model.name, "source": model.source, "family": model.adapter.family,
                   "fingerprint": model.fingerprint, "weights": model.weights_fingerprint, "dtype": model.dtype,
                   "device": str(model.device), "revision": model.revision},
            intervention=({"key": intervention.key, "spec": intervention.to_json()}
                          if intervention is not None and intervention else None),
            params=dict(params or {}),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        """The inverse of :meth:`to_json`; a clear message for a file that is not a neurolab provenance."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"not a provenance file (invalid JSON: {error})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not a neurolab provenance file (expected \"format\": \"{FORMAT}\")")
        try:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except TypeError as error:
            raise InputError(f"malformed provenance: {error}") from None

    @classmethod
    def read(cls, path: str | Path) -> Provenance:
        try:
            return cls.from_json(Path(path).read_text())
        except OSError as error:
            raise InputError(f"cannot read {path}: {error}") from None

    def describe(self) -> str:
        """One line for a caption or a summary: kind, model, selection, condition."""
        chosen = ", ".join(f"{k}={v}" for k, v in self.selection.items())
        under = f"under {self.intervention['spec'].get('name') or self.intervention['key']}" if self.intervention \
            else "clean model"
        return f"{self.kind} of {self.model['name']} ({self.model['fingerprint']}; {chosen}; {under})"
