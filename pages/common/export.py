"""The Export control every chart and table carries, in the same place on every page.

Every download's ``data`` is a callable: Streamlit runs it only when the user clicks, so a rerun renders and
serialises nothing (a PNG costs a chromium render, a Parquet a serialisation). ``on_click="ignore"``: a download
does not rerun the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial

import pandas as pd
import streamlit as st

from neurolab.errors import NeurolabError
from neurolab.export.bundle import DATA_FORMATS, FIGURE_FORMATS, PROVENANCE, Export
from neurolab.export.provenance import Provenance

MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html",
        "csv": "text/csv", "parquet": "application/vnd.apache.parquet", PROVENANCE: "application/json",
        "zip": "application/zip", "json": "application/json"}
LABELS = {"parquet": "Parquet", PROVENANCE: "Provenance (JSON)"}
SIZES = {"one column": 1, "two columns": 2}
STATIC = ("png", "svg", "pdf")


def _static_problem() -> str | None:
    """Why PNG, SVG and PDF cannot be made here (no chromium), or None; a file check, no browser started."""
    from neurolab.export.render import ExportError, find_browser

    try:
        find_browser()
    except ExportError as error:
        return str(error)
    return None


def _download(label: str, data: Callable[[], bytes | str], file_name: str, key: str) -> None:
    st.download_button(label, data, file_name=file_name, mime=MIME.get(file_name.rsplit(".", 1)[-1]), key=key,
                       on_click="ignore")


def controls(export: Export, key: str) -> None:
    """The one "Export" popover of a chart (figure formats in a chosen size, its data, its provenance) or of a
    table (data and provenance)."""
    with st.popover("Export", key=f"{key}_export"):
        formats: Sequence[str] = ()
        columns = 1
        if export.figure is not None:
            size = st.radio("Size", list(SIZES), horizontal=True, key=f"{key}_size",
                            help="static formats sized for a paper's one or two columns")
            columns = SIZES[size]
            problem = _static_problem()
            if problem:
                st.caption(problem)
            formats = [fmt for fmt in FIGURE_FORMATS if not (problem and fmt in STATIC)]
        for fmt in (*formats, *DATA_FORMATS, PROVENANCE):
            _download(LABELS.get(fmt, fmt.upper()), partial(export.file, fmt, columns), export.filename(fmt),
                      f"{key}_{fmt.replace('.', '_')}")


def chart(export: Export, key: str, **plotly_kwargs):
    """Draw the export's figure (``key`` as the chart's, unchanged) and its Export control right under it; returns
    what ``st.plotly_chart`` returns (the selection event of a selectable chart)."""
    event = st.plotly_chart(export.figure, key=key, **plotly_kwargs)
    controls(export, key)
    return event


def table(frame: pd.DataFrame, key: str, stem: str, provenance: Provenance | None = None, static: bool = False,
          **dataframe_kwargs):
    """``st.dataframe`` (``key`` as the table's) with its CSV and Parquet (and provenance) downloads; returns what
    ``st.dataframe`` returns (the selection event of a selectable table). ``static``: a few rows drawn as plain HTML
    (``st.table``), for a table that changes with every toggle: the canvas grid of ``st.dataframe`` lays itself out
    again 0.3-0.4 s after the rest of the page has settled."""
    if static:
        event = st.table(frame.set_index(frame.columns[0]))
    else:
        event = st.dataframe(frame, hide_index=True, key=key, **dataframe_kwargs)
    with st.popover("Export", key=f"{key}_export"):
        if provenance is None:
            export = Export(stem, Provenance("table", {}, {}), frame)
            formats: Sequence[str] = DATA_FORMATS
        else:
            export, formats = Export(stem, provenance, frame), (*DATA_FORMATS, PROVENANCE)
        for fmt in formats:
            _download(LABELS.get(fmt, fmt.upper()), partial(export.file, fmt), export.filename(fmt),
                      f"{key}_{fmt.replace('.', '_')}")
    return event


def report(exports: Sequence[Export] | Callable[[], Sequence[Export]], title: str, summary: Callable[[], list[str]],
           key: str, label: str = "Report (zip)") -> None:
    """A download of every export's files with a generated Markdown summary, built on click
    (:func:`neurolab.export.bundle.report_zip`); ``exports`` may be a callable, for figures the page did not draw;
    ``summary`` gives the key numbers' lines."""
    def build() -> bytes:
        from neurolab.export.bundle import report_zip

        return report_zip(list(exports() if callable(exports) else exports), title, summary())

    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in title).strip("-") or "report"
    _download(label, build, f"{name}.zip", key)


def graph(make: Callable[[], dict], file_name: str, key: str, label: str = "Neurons as a graph (JSON)") -> None:
    """The neurons as a node/link graph for circuit-tracer / Neuronpedia's viewer, built on click
    (:func:`neurolab.export.graph.neuron_graph`)."""
    def build() -> bytes:
        try:
            return json.dumps(make(), indent=1).encode()
        except NeurolabError as error:  # a download cannot show a message: the file says what went wrong
            return json.dumps({"error": str(error)}).encode()

    _download(label, build, file_name, key)
