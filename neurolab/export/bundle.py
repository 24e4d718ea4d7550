"""One exported result: a figure (or a table alone), the numbers behind it, and its provenance, as files; and a
report that bundles several of them into one zip with a Markdown summary."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..errors import InputError
from .provenance import Provenance

FIGURE_FORMATS = ("png", "svg", "pdf", "html")
DATA_FORMATS = ("csv", "parquet")
PROVENANCE = "provenance.json"


@dataclass
class Export:
    """What a page's Export control and ``python -m neurolab figure`` write: ``<stem>.<format>`` for the figure's
    formats and the data's, and ``<stem>.provenance.json``."""

    stem: str  # a file name without extension, e.g. "L3N12-K-add"
    provenance: Provenance
    data: pd.DataFrame
    figure: go.Figure | None = None  # None: a table alone

    @property
    def formats(self) -> tuple[str, ...]:
        return (*(FIGURE_FORMATS if self.figure is not None else ()), *DATA_FORMATS, PROVENANCE)

    def filename(self, fmt: str) -> str:
        return f"{self.stem}.{fmt}"

    def file(self, fmt: str, columns: int = 1) -> bytes:
        """The bytes of one format (figures rendered on demand: :func:`neurolab.export.render.render`)."""
        if fmt in FIGURE_FORMATS and self.figure is not None:
            from .render import render

            return render(self.figure, fmt, columns=columns)
        if fmt == "csv":
            return self.data.to_csv(index=False).encode()
        if fmt == "parquet":
            buffer = io.BytesIO()
            self.data.to_parquet(buffer, index=False)
            return buffer.getvalue()
        if fmt == PROVENANCE:
            return self.provenance.to_json().encode()
        raise InputError(f"cannot export {self.stem} as {fmt!r}; formats: {', '.join(self.formats)}")

    def write(self, folder: str | Path, formats: tuple[str, ...] | None = None, columns: int = 1) -> list[Path]:
        """Write ``formats`` (default: all) into ``folder``; the provenance always goes with them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = list(dict.fromkeys([*(formats or self.formats), PROVENANCE]))
        written = []
        for fmt in chosen:
            path = folder / self.filename(fmt)
            path.write_bytes(self.file(fmt, columns))
            written.append(path)
        return written


WHAT = {  # a file's format -> what it is, for the report's summary
    "png": "figure, PNG at print resolution",
    "svg": "figure, SVG (vector)",
    "pdf": "figure, PDF (vector)",
    "html": "interactive figure, standalone HTML (opens offline)",
    "csv": "data behind it, CSV",
    "parquet": "data behind it, Parquet",
    PROVENANCE: "provenance: how it was made (`python -m neurolab figure --from` remakes it)",
}
SUMMARY = "summary.md"


def report_zip(exports: Sequence[Export], title: str, summary_lines: Sequence[str] = ()) -> bytes:
    """One zip of every export's files (each format rendered once) and a ``summary.md`` that says what was run, the
    key numbers (``summary_lines``) and which file is which. Without chromium the static figure formats are left out
    and the summary says so; HTML, data and provenance are always there."""
    from .render import STATIC_FORMATS, ExportError

    files: dict[str, bytes] = {}
    table: list[tuple[str, str]] = []
    no_static: str | None = None
    for export in exports:
        for fmt in export.formats:
            name = export.filename(fmt)
            if name in files:
                raise InputError(f"two exports in one report are both named {export.stem!r}")
            if fmt in STATIC_FORMATS and no_static:
                continue
            try:
                files[name] = export.file(fmt)
            except ExportError as error:
                if fmt not in STATIC_FORMATS:
                    raise
                no_static = str(error)
                continue
            table.append((name, f"{WHAT[fmt]}: {export.provenance.describe()}"))
    summary = _summary(title, [export.provenance for export in exports], summary_lines, table, no_static)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(SUMMARY, summary)
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _summary(title: str, provenances: list[Provenance], lines: Sequence[str], table: list[tuple[str, str]],
             no_static: str | None) -> str:
    """The report's Markdown: when and with what it was made, the key numbers, and a file -> what-it-is table."""
    created = sorted(p.created for p in provenances)
    when = created[0] if len(set(created)) <= 1 else f"{created[0]} to {created[-1]}"
    models = dict.fromkeys(f"{p.model['name']} ({p.model.get('family')}, fingerprint {p.model['fingerprint']}, "
                           f"{p.model.get('dtype')} on {p.model.get('device')})" for p in provenances)
    versions = dict.fromkeys(f"neurolab {p.neurolab.get('version')} ({p.neurolab.get('commit') or 'no git commit'})"
                             for p in provenances)
    out = [f"# {title}", "", f"- Made: {when or 'now'}", *(f"- Model: {model}" for model in models),
           *(f"- With: {version}" for version in versions)]
    if lines:
        out += ["", "## Key numbers", "", *(f"- {line}" for line in lines)]
    if no_static:
        out += ["", f"PNG, SVG and PDF are not included: {no_static}"]
    rows = [(SUMMARY, "this summary"), *table]
    out += ["", "## Files", "", "| File | What it is |", "| --- | --- |",
            *(f"| `{name}` | {_cell(what)} |" for name, what in rows)]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", r"\|").replace("\n", " ")
