"""Results of analyses that are tables (knockout curves, patching effects ...): one Parquet file per result, keyed
in DuckDB by a hash of everything it depends on, so a page or the CLI computes each once."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd

from ..keys import ANALYSIS_KEY_SIZE, json_digest


def analysis_key(kind: str, spec: dict) -> str:
    """Stable across processes: a hash of the kind and the canonical JSON of the spec."""
    return json_digest({"kind": kind, **spec}, size=ANALYSIS_KEY_SIZE)


class AnalysisTables:
    """Mixin of :class:`~neurolab.store.Store`."""

    def cached_frame(self, kind: str, spec: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The stored result of ``kind`` for ``spec``, or ``compute()``'s, stored first. ``spec`` must name
        everything the result depends on (model fingerprint, grid, intervention key, settings)."""
        frame = self.stored_frame(kind, spec)
        if frame is not None:
            return frame
        key = analysis_key(kind, spec)
        frame = compute()
        file = f"analyses/{kind}-{key}.parquet"
        (self.values_dir / "analyses").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(self.values_dir / file, index=False)
        with self.cursor() as con:
            con.execute("INSERT INTO analyses (key, kind, spec, file) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE "
                        "SET file = excluded.file", [key, kind, json.dumps(spec, sort_keys=True, default=str), file])
        return frame

    def stored_frame(self, kind: str, spec: dict) -> pd.DataFrame | None:
        """The stored result of ``kind`` for ``spec``, or None (nothing computed: a page asks before offering to)."""
        with self.cursor() as con:
            row = con.execute("SELECT file FROM analyses WHERE key = ?", [analysis_key(kind, spec)]).fetchone()
        if row is not None and (self.values_dir / row[0]).exists():
            return pd.read_parquet(self.values_dir / row[0])
        return None

    def analyses(self, kind: str | None = None) -> pd.DataFrame:
        """The stored analyses (key, kind, spec, file, created), optionally of one kind."""
        with self.cursor() as con:
            return con.execute("SELECT * FROM analyses WHERE ?::VARCHAR IS NULL OR kind = ? ORDER BY created",
                               [kind, kind]).df()
