"""Figures as files: PNG, SVG and PDF through kaleido and Debian's chromium, standalone HTML through Plotly alone.

Starting chromium costs seconds and a warm one renders a figure in about half a second (``../shared/browser.md``), so
one kaleido browser per process opens on the first static export and is reused until exit. It runs on its own event
loop thread and renders one figure at a time behind a lock, because Streamlit serves sessions from several threads.
Kaleido's ``start_sync_server`` would do the same, but when chromium fails to start, its worker thread dies and every
later call waits forever. Here the failure reaches the caller as an :class:`ExportError`, and each figure has a
timeout.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import threading
from collections.abc import Coroutine
from typing import Any

import kaleido
import plotly.graph_objects as go

from ..errors import InputError, NeurolabError
from .style import publication

STATIC_FORMATS = ("png", "svg", "pdf")
FORMATS = (*STATIC_FORMATS, "html")
DEBIAN_CHROMIUM = "/usr/bin/chromium"
PNG_SCALE = 3  # 3.5 in wide at 96 px/in, times 3: about 290 dpi, print quality
START_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 60.0


class ExportError(NeurolabError):
    """A static format that cannot be made on this machine (no chromium, or it failed); HTML and data still export."""


def find_browser() -> str:
    """``$BROWSER_PATH`` when set (kaleido's own variable), else Debian's chromium, else a chromium on ``PATH``."""
    configured = os.environ.get("BROWSER_PATH")
    candidates = [configured] if configured else [DEBIAN_CHROMIUM, shutil.which("chromium")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    where = f"BROWSER_PATH={configured!r} is not an executable" if configured else f"no chromium at {DEBIAN_CHROMIUM}"
    raise ExportError(f"PNG, SVG and PDF need a chromium browser ({where}): install it with `apt-get install "
                      "chromium` (Debian/Ubuntu), or set BROWSER_PATH to a Chrome or Chromium executable. HTML, CSV, "
                      "Parquet and the provenance still export without it.")


class _Browser:
    """One kaleido browser, driven from its own event loop thread (kaleido is asyncio; callers are not)."""

    def __init__(self, path: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="neurolab-kaleido", daemon=True)
        self._thread.start()
        self._kaleido: kaleido.Kaleido | None = None
        try:
            self._kaleido = self._run(self._open(path), START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    @staticmethod
    async def _open(path: str) -> kaleido.Kaleido:
        # mathjax=False: kaleido's page would otherwise load MathJax from a CDN (no network here; no LaTeX labels)
        browser = kaleido.Kaleido(path=path, mathjax=False)
        await browser.open()
        return browser

    def _run(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def render(self, figure: go.Figure, fmt: str, scale: float) -> bytes:
        layout = figure.layout
        opts = dict(format=fmt, width=layout.width, height=layout.height, scale=scale)
        return self._run(self._kaleido.calc_fig(figure.to_dict(), opts), RENDER_TIMEOUT_S)

    def close(self) -> None:
        if self._kaleido is not None:
            try:
                self._run(self._kaleido.close(), 15)
            except Exception:  # a browser that already died: nothing left to close
                pass
            self._kaleido = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


_lock = threading.Lock()
_browser: _Browser | None = None


def stop() -> None:
    """Close the shared browser (at exit, or to let the next static export find chromium again)."""
    global _browser
    with _lock:
        if _browser is not None:
            _browser.close()
            _browser = None


atexit.register(stop)


def _render_static(figure: go.Figure, fmt: str) -> bytes:
    """``figure`` through the shared browser, started on first use; the caller holds ``_lock``."""
    global _browser
    if _browser is None:
        path = find_browser()
        try:
            _browser = _Browser(path)
        except Exception as error:
            raise ExportError(f"chromium at {path} did not start ({error or type(error).__name__}); check that it "
                              "runs (`chromium --version`), or set BROWSER_PATH to another Chromium. HTML, CSV, "
                              "Parquet and the provenance still export without it.") from error
    try:
        return _browser.render(figure, fmt, PNG_SCALE if fmt == "png" else 1)
    except Exception as error:
        _browser.close()  # a browser that failed once is not trusted again: the next export starts a fresh one
        _browser = None
        raise ExportError(f"rendering the figure as {fmt.upper()} failed: {error or type(error).__name__}") from error


def render(figure: go.Figure, fmt: str, columns: int = 1) -> bytes:
    """The figure with the publication look (:func:`~neurolab.export.style.publication`) as ``fmt`` bytes: PNG at
    print resolution, SVG and PDF as vectors, or a standalone HTML page that carries plotly.js (opens offline)."""
    if fmt not in FORMATS:
        raise InputError(f"cannot render a figure as {fmt!r}; formats: {', '.join(FORMATS)}")
    with _lock:  # one figure at a time: plotly's validators are not built for threads either
        styled = publication(figure, columns)
        if fmt == "html":
            return styled.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False}).encode()
        return _render_static(styled, fmt)
