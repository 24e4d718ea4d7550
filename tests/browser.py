"""Driving the dashboard in a real browser: a Streamlit server, Debian's chromium through Playwright, and ``settle``.

Used by ``tests/test_browser.py`` and ``benchmarks/bench_browser.py`` (facts behind the method:
``../shared/browser.md``).

- :class:`Server` runs ``python app.py`` (as ``make run`` does: the model loaded, then ``streamlit run``) on a free
  port of 127.0.0.1 with a temporary store
  (``NEUROLAB_STORE``) and ``HF_HUB_OFFLINE=1``, in its own process group, and waits for ``/_stcore/health``;
  stopping it kills that group (``streamlit`` may fork: a wrapper's PID is not the server's).
- :func:`launch_browser` starts ``/usr/bin/chromium`` (never a Playwright browser download); :func:`new_page` opens
  a page with the instrumentation ``settle`` reads (a DOM mutation clock and a websocket frame clock, both kept in
  the page, in epoch milliseconds like Python's ``time.time()``).
- :func:`settle` does an action and waits until the page has finished reacting to it: the server reacted (a
  websocket frame arrived or the script state was seen ``running``), then the script is ``notRunning``, the status
  widget and skeletons are gone, every Plotly chart is drawn, and neither the DOM nor the websocket changed for
  ``quiet`` seconds. It returns the settle time: the last change minus the action's start.

Nothing here imports neurolab: the browser side knows the dashboard only through what a user sees.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"

# Installed before any page script: counts DOM mutations and websocket messages, with the time of the last one.
INSTRUMENT = """
(() => {
  if (window.__nl) return;
  const nl = window.__nl = {doc: Math.random().toString(36).slice(2), mutations: 0, lastMutation: Date.now(),
                            frames: 0, lastFrame: 0, sawRunning: false};
  new MutationObserver((records) => {
    nl.mutations += records.length;
    nl.lastMutation = Date.now();
  }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => { nl.frames += 1; nl.lastFrame = Date.now(); });
    }
  };
})();
"""

# One poll of the page's state (cheap: a few selectors).
PROBE = """
() => {
  const nl = window.__nl || {doc: null, mutations: 0, lastMutation: 0, frames: 0, lastFrame: 0};
  const app = document.querySelector('[data-testid="stApp"]');
  const state = app ? app.getAttribute('data-test-script-state') : null;
  if (state === 'running') nl.sawRunning = true;
  const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]');
  let drawn = 0;
  for (const chart of charts) if (chart.querySelector('.js-plotly-plot .main-svg')) drawn += 1;
  return {
    doc: nl.doc, mutations: nl.mutations, lastMutation: nl.lastMutation, frames: nl.frames,
    lastFrame: nl.lastFrame, sawRunning: !!nl.sawRunning, state: state,
    connection: app ? app.getAttribute('data-test-connection-state') : null,
    status: document.querySelectorAll('[data-testid="stStatusWidget"]').length,
    skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    charts: charts.length, drawn: drawn,
    exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  };
}
"""


class SettleTimeout(TimeoutError):
    """The page did not settle in time; the message carries its last observed state."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python app.py`` (``streamlit run app.py`` after loading the model) on a free local port, with its own
    temporary store; a context manager.

    ``store`` defaults to a fresh file in a temporary folder (removed with the server); ``log`` (default: beside the
    store) receives the server's output, whose tail a failed start reports."""

    def __init__(self, store: str | Path | None = None, port: int | None = None, log: str | Path | None = None,
                 env: dict[str, str] | None = None, health_timeout: float = 120.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="neurolab-browser-")
        self.store = Path(store) if store else Path(self._tmp.name) / "store.duckdb"
        self.log = Path(log) if log else Path(self._tmp.name) / "server.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "NEUROLAB_STORE": str(self.store), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.health_timeout = health_timeout
        self.process: subprocess.Popen | None = None
        self.started_at = self.healthy_at = 0.0

    def start(self) -> Server:
        command = [sys.executable, "app.py", "--server.address", "127.0.0.1",
                   "--server.port", str(self.port), "--server.headless", "true",
                   "--browser.gatherUsageStats", "false"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.started_at = time.time()
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        deadline = time.time() + self.health_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                body = urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read().decode()
                if body.strip() == "ok":
                    self.healthy_at = time.time()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit not healthy after {self.health_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Kill the server's process group (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is not None and self.process.poll() is None:
            pgid = self.process.pid  # start_new_session: the group's id is the leader's pid
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(timeout=15)
            except ProcessLookupError:
                pass
        self.process = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def launch_browser(playwright, **options):
    """Debian's chromium, headless (no Playwright browser download)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; "
                           "`make test` does it when run as root)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, **options)


def new_page(browser_or_context, width: int = 1400, height: int = 1000):
    """A page (in a new context when given a browser) with the instrumentation :func:`settle` reads."""
    if hasattr(browser_or_context, "new_context"):
        context = browser_or_context.new_context(viewport={"width": width, "height": height})
    else:
        context = browser_or_context
    context.add_init_script(INSTRUMENT)
    return context.new_page()


def probe(page) -> dict[str, Any]:
    return page.evaluate(PROBE)


def settle(page, action: Callable[[], Any] | None = None, quiet: float = 1.0, timeout: float = 120.0,
           react_timeout: float = 30.0, poll: float = 0.05, must_react: bool = True) -> float:
    """Do ``action`` (a callable; None: only wait), then wait until the page has settled; return the settle time in
    seconds, from the action's start to the last DOM or websocket change.

    ``quiet`` (0.5-1 s is right): how long nothing may change before the page counts as settled; it is not part of
    the returned time. The server must react within ``react_timeout`` (a websocket frame, or the script seen
    running, or a new document); the whole wait is bounded by ``timeout``. Raises :class:`SettleTimeout` with the
    page's last state otherwise; with ``must_react=False`` an action that changed nothing (a value typed again)
    returns 0.0 once ``react_timeout`` has passed."""
    before = None
    if action is not None:
        page.evaluate("() => { if (window.__nl) window.__nl.sawRunning = false; }")  # only a run after the action
        before = probe(page)
    start = time.time()
    if action is not None:
        action()
    deadline = start + timeout
    reacted = action is None
    state: dict[str, Any] = {}
    while True:
        now = time.time()
        try:
            state = probe(page)
        except Exception as error:  # a navigation destroyed the context mid-evaluate: poll again
            if now > deadline:
                raise SettleTimeout(f"page never evaluable: {error}") from error
            time.sleep(poll)
            continue
        if not reacted:
            if state["doc"] != before["doc"]:  # a new document (navigation, reload): its first frame
                reacted = state["frames"] > 0 or state["sawRunning"]
            else:
                reacted = state["frames"] > before["frames"] or state["sawRunning"]
            if not reacted:
                if now - start > react_timeout:
                    if not must_react:
                        return 0.0
                    raise SettleTimeout(f"the server did not react within {react_timeout:.0f} s: {state}")
                time.sleep(poll)
                continue
        last = max(state["lastMutation"], state["lastFrame"]) / 1000.0
        idle = (state["state"] == "notRunning" and state["connection"] == "CONNECTED" and state["status"] == 0
                and state["skeletons"] == 0 and state["drawn"] == state["charts"])
        if idle and now - last >= quiet:
            return max(0.0, last - start)
        if now > deadline:
            raise SettleTimeout(f"not settled after {timeout:.0f} s: {state}")
        time.sleep(poll)


def screenshot(page, name: str, folder: Path = ARTIFACTS) -> Path:
    """A full-height screenshot of the app: ``stMain`` scrolls rather than the document, so the viewport grows to
    its ``scrollHeight`` for the shot and is restored afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    try:
        if height and height > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 8000)})
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
    return path


# Selectors and small actions a user does (Streamlit 1.67 test ids).
def exactly(text: str) -> re.Pattern:
    """A ``has_text`` pattern matching the whole (trimmed) text, not a substring: "Operator" must not match
    "Operator whose classification to compare with"."""
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def nav_link(page, label: str):
    """The sidebar navigation link of a page (expanding "View N more" when the list is collapsed)."""
    more = page.locator('[data-testid="stSidebarNavViewButton"]')
    if more.count() and "more" in more.first.inner_text().lower():
        more.first.click()
    return page.locator('[data-testid="stSidebarNav"] a').filter(has_text=exactly(label)).first


def widget(page, testid: str, label: str):
    """A widget of kind ``testid`` (``stTextInput``, ``stSelectbox``, ``stRadio``, ...) whose label is ``label``."""
    return page.locator(f'[data-testid="{testid}"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=exactly(label))).first


def text_input(page, label: str):
    return widget(page, "stTextInput", label).locator("input")


def fill_and_submit(page, label: str, value: str) -> None:
    box = text_input(page, label)
    box.fill(value)
    box.press("Enter")


def choose_radio(page, label: str, option: str) -> None:
    options = widget(page, "stRadio", label).locator('[data-testid="stRadioOption"]')
    options.filter(has_text=exactly(option)).first.click()


def select_option(page, label: str, option: str) -> None:
    """Open a selectbox (a combobox in Streamlit 1.67) and click one of its options."""
    widget(page, "stSelectbox", label).locator('[role="combobox"]').click()
    page.locator('[role="option"]').filter(has_text=exactly(option)).first.click()


def selected(page, label: str) -> str:
    """The option a selectbox shows."""
    return widget(page, "stSelectbox", label).locator('[role="combobox"]').input_value().strip()


def toggle(page, label: str):
    """An ``st.toggle``/``st.checkbox`` input (click its label to flip it; ``is_checked()`` reads it)."""
    return page.locator('[data-testid="stCheckbox"]').filter(has_text=exactly(label)).first


def toggle_checked(page, label: str) -> bool:
    return toggle(page, label).locator("input").is_checked()


def button(page, label: str):
    return page.locator('[data-testid="stButton"] button').filter(has_text=re.compile(re.escape(label))).first


def set_number(page, label: str, value: float) -> None:
    """Type a value into an ``st.number_input`` and commit it (Enter)."""
    box = widget(page, "stNumberInput", label).locator("input")
    box.fill(str(value))
    box.press("Enter")


def slider_key(page, label: str, key: str) -> None:
    """Move a slider (or select_slider) by the keyboard: ``ArrowRight`` is one notch up."""
    thumb = widget(page, "stSlider", label).locator('input[type="range"]').first
    thumb.focus()
    thumb.press(key)


def slider_value(page, label: str) -> str:
    thumb = widget(page, "stSlider", label).locator('input[type="range"]').first
    return thumb.get_attribute("aria-valuetext") or thumb.input_value()


def tab(page, name: str):
    return page.get_by_role("tab", name=name)
