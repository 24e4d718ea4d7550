"""The dashboard measured in a real browser: what a user waits for after each interaction, beside the time the
analysis core takes for the same computation, on the embedded model.

Run: ``.venv/bin/python benchmarks/bench_browser.py [--repeats 5] [--quiet 1.0] [--json]`` (needs Debian's
``/usr/bin/chromium``; ``make bench`` installs it when missing).

Method (``tests/browser.py``, after ``../shared/browser.md``): a Streamlit server on the embedded model with a
temporary store, driven by headless chromium through Playwright. Each figure is a *settle time*: from the action
(a click, a typed value, a navigation) to the page's last change (DOM or websocket) once the script is idle, the
status widget and skeletons gone and every Plotly chart drawn; the quiet window that proves it settled (``--quiet``)
is not counted. Beside it, the *core* time: the same neurolab calls the page's rerun makes, in this process on a
store of its own brought to the same state (``Store``, ``report``, ``load_neuron_map``, ``ablate_grid``,
``scores_for``, ``heuristic_knockout`` ...); ratio = browser / core, the page's overhead (aim <= 1.3x where the core
does real work; for interactions whose core work is a few ms, the overhead in seconds says more). Medians over
``--repeats`` runs, each on new inputs (a new prompt, another neuron, new neurons to ablate, another sample seed,
another top-N) so nothing is served from a cache the real interaction would not hit; browser and core runs are
interleaved. An interaction the UI does not offer is reported "n/a", not failed.

Budgets (issue 19): first page <= 5 s, warm page switch <= 1.0 s, new home prompt <= 0.5 s, Operand Grid another
neuron <= 0.5 s, Ablation Lab new toggle <= 1.5 s, zero -> mean <= 2 s, off / on again <= 0.5 s, MathNeuro first
score / K one notch / apply <= 5 / 1 / 1.5 s, heuristic knockout <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout: neurolab, and tests/ for the browser helpers

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser import (  # noqa: E402
    Server,
    SettleTimeout,
    button,
    choose_radio,
    exactly,
    fill_and_submit,
    launch_browser,
    nav_link,
    new_page,
    probe,
    set_number,
    settle,
    slider_key,
    slider_value,
    tab,
    text_input,
    toggle,
    toggle_checked,
    widget,
)

PROMPT = "23+45="  # the home page's default prompt (the Ablation Lab's "current prompt")
FIRST_PAGE_CORE = """
import time
start = time.perf_counter()
from neurolab.analysis.predict import report
from neurolab.models.loading import load_model
from neurolab.store import Store
Store(__import__("sys").argv[1])
report(load_model("embedded"), "23+45=")
print(time.perf_counter() - start)
"""


#: every figure: key -> (label, budget in s from issue 19, or None)
ROWS: dict[str, tuple[str, float | None]] = {
    "first_page": ("first page after the server is healthy", 5.0),
    "warm_switch": ("warm page switch (home <-> Model, sidebar link)", 1.0),
    "new_prompt": ("home: a new prompt typed", 0.5),
    "grid_first_sweep": ("Operand Grid: run the + sweep (once; all neurons)", None),
    "grid_neuron": ("Operand Grid: another neuron picked", 0.5),
    "grid_layer": ("Operand Grid: another layer picked", 0.5),
    "lab_warm": ("Ablation Lab: first toggle on (clean grid kept; once)", None),
    "lab_new": ("Ablation Lab: a new ablation toggled on (2 typed neurons)", 1.5),
    "lab_mean": ("Ablation Lab: zero -> mean while on", 2.0),
    "lab_off": ("Ablation Lab: toggled off", 0.5),
    "lab_again": ("Ablation Lab: toggled on again (cached)", 0.5),
    "mn_cold": ("MathNeuro: first score, cold store (once)", 5.0),
    "mn_first": ("MathNeuro: first score (new samples: another seed)", 5.0),
    "mn_notch": ("MathNeuro: K moved one notch", 1.0),
    "mn_evaluate": ("MathNeuro: evaluate the edit (every operator's grid; asked for)", None),
    "mn_apply": ("MathNeuro: apply the edit on every page", 1.5),
    "knockout_cold": ("Circuit: heuristic knockout, first (classification; once)", 10.0),
    "knockout": ("Circuit: heuristic knockout, another top-N (classified again)", 10.0),
}


#: figures measured once (a cold cache), not ``--repeats`` times
ONCE = {"grid_first_sweep", "lab_warm", "mn_cold", "knockout_cold"}
#: below this core time a ratio says nothing (the page's overhead in seconds does)
RATIO_FLOOR = 0.05


class Unavailable(Exception):
    """The UI does not offer this interaction (yet)."""


@dataclass
class Row:
    key: str
    label: str
    budget: float | None
    browser: list[float] = field(default_factory=list)
    core: list[float] = field(default_factory=list)
    status: str = "ok"
    note: str = ""

    def median(self, which: str) -> float | None:
        values = getattr(self, which)
        return statistics.median(values) if values else None

    def figures(self) -> dict:
        b, c = self.median("browser"), self.median("core")
        both = b is not None and c is not None
        return {
            "label": self.label, "status": self.status, "note": self.note, "browser_s": b, "core_s": c,
            "ratio": b / c if both and c >= RATIO_FLOOR else None, "overhead_s": b - c if both else None,
            "budget_s": self.budget, "met": None if b is None or self.budget is None else b <= self.budget,
            "browser_runs": self.browser, "core_runs": self.core,
        }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def need(locator, what: str):
    """``locator`` if the page shows it, else :class:`Unavailable` (after a short wait: the page has settled)."""
    try:
        locator.wait_for(state="visible", timeout=5000)
    except PlaywrightError as error:
        raise Unavailable(f"the page offers no {what}") from error
    return locator


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.rows: dict[str, Row] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-browser-")
        self.server: Server | None = None
        self.page = None
        self._core_ready = False

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def row(self, key: str) -> Row:
        return self.rows.setdefault(key, Row(key, *ROWS[key]))

    def settle(self, action=None, timeout: float | None = None) -> float:
        return settle(self.page, action, quiet=self.args.quiet, timeout=timeout or self.args.timeout)

    def setup_step(self, action) -> None:
        """An untimed step that may change nothing (a value that is already set): no rerun is fine."""
        settle(self.page, action, quiet=self.args.quiet, timeout=self.args.timeout, react_timeout=3.0,
               must_react=False)

    def measure(self, row: Row, action, core: Callable[[], object] | None = None) -> None:
        """One run: the browser action's settle time, then the core's time for the same computation."""
        seconds = self.settle(action)
        if probe(self.page)["exceptions"]:
            raise RuntimeError("the page shows an exception: "
                               + self.page.locator('[data-testid="stException"]').first.inner_text()[:300])
        row.browser.append(seconds)
        if core is not None:
            row.core.append(timed(core))
            self.flush()
        print(f"  {row.label}: browser {seconds:.3f} s" + (f", core {row.core[-1]:.3f} s" if core else ""),
              flush=True)

    def section(self, name: str, keys: list[str], body: Callable[[], None]) -> None:
        """Run one group of interactions; a missing widget marks its rows n/a, another failure marks them error."""
        print(f"\n== {name}", flush=True)
        rows = [self.row(key) for key in keys]
        try:
            body()
        except Unavailable as why:
            for row in rows:
                if not row.browser:
                    row.status, row.note = "n/a", str(why)
            print(f"  n/a: {why}", flush=True)
        except (SettleTimeout, PlaywrightError, RuntimeError) as error:
            for row in rows:
                if len(row.browser) < (1 if row.key in ONCE else self.args.repeats):
                    row.status, row.note = "error", f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
            print(f"  error: {error}", flush=True)

    # -- the core side, in this process ----------------------------------------------------------------------
    def core_setup(self) -> None:
        if self._core_ready:
            return
        from neurolab.models.loading import load_model
        from neurolab.store import Store

        self.model = load_model("embedded")
        self.store = Store(Path(self.tmp.name) / "core.duckdb")
        self._core_ready = True

    def flush(self) -> None:
        """Store writes a result defers (after it is shown) are done before the next run, untimed."""
        if self._core_ready:
            from neurolab.store import deferred
            deferred.flush()

    # -- the browser side ------------------------------------------------------------------------------------
    def open_server(self, playwright, browser) -> None:
        """First page after health, on ``--repeats`` fresh servers; the last one stays up for the rest."""
        row = self.row("first_page")
        print("\n== first page (a fresh server each run; core: a fresh process importing, loading, predicting)",
              flush=True)
        for i in range(self.args.repeats):
            server = Server(store=Path(self.tmp.name) / f"server-{i}.duckdb",
                            log=Path(self.tmp.name) / f"server-{i}.log")
            server.start()
            self.server = server  # closed by run() whatever happens
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = self.page = new_page(context)
            row.browser.append(self.settle(lambda page=page, server=server: page.goto(server.url)))
            core_store = Path(self.tmp.name) / f"first-page-core-{i}.duckdb"
            out = subprocess.run([sys.executable, "-c", FIRST_PAGE_CORE, str(core_store)], cwd=ROOT,
                                 capture_output=True, text=True, check=True, env=server.env)
            row.core.append(float(out.stdout.strip().splitlines()[-1]))
            print(f"  run {i + 1}: browser {row.browser[-1]:.2f} s, core {row.core[-1]:.2f} s "
                  f"(health after {server.healthy_at - server.started_at:.1f} s)", flush=True)
            if i < self.args.repeats - 1:
                context.close()
                server.close()
                self.server = None
        self.core_setup()

    def go(self, label: str) -> float:
        link = need(nav_link(self.page, label), f"navigation link {label!r}")
        return self.settle(link.click)

    # -- the interactions ------------------------------------------------------------------------------------
    def page_switch(self) -> None:
        row = self.row("warm_switch")
        from neurolab.analysis.predict import report
        from neurolab.models.loading import load_model

        for _ in range(self.args.repeats):
            for label in ("Model", "Home"):
                link = need(nav_link(self.page, label), f"navigation link {label!r}")
                core = ((lambda: load_model("embedded").describe()) if label == "Model" else
                        (lambda: report(load_model("embedded"), PROMPT)))
                self.measure(row, link.click, core)

    def new_prompt(self) -> None:
        row = self.row("new_prompt")
        from neurolab.analysis.predict import report

        need(text_input(self.page, "Arithmetic prompt"), "prompt box")
        for i in range(self.args.repeats):
            text = f"{31 + 7 * i}+{12 + 5 * i}="
            self.measure(row, lambda text=text: fill_and_submit(self.page, "Arithmetic prompt", text),
                         lambda text=text: report(self.model, text, neurons_per_layer=10))
        self.setup_step(lambda: fill_and_submit(self.page, "Arithmetic prompt", PROMPT))

    def operand_grid(self) -> None:
        from neurolab.analysis.neuron_maps import load_neuron_map, most_active, neuron_matches
        from neurolab.analysis.sweep import find_sweep, grid_for, run_sweep
        from neurolab.analysis.value_lens import number_line

        first = self.row("grid_first_sweep")
        neuron_row = self.row("grid_neuron")
        layer_row = self.row("grid_layer")
        self.go("Operand Grid")
        offer = self.page.locator('[data-testid="stButton"] button').filter(has_text="Run the sweep")
        if offer.count():
            self.measure(first, offer.first.click, lambda: run_sweep(self.model, self.store, "+"))
        else:
            run_sweep(self.model, self.store, "+")
        grid = grid_for(self.model, "+", 100)
        sweep_id = find_sweep(self.model, self.store, grid)
        layer_cache: dict[int, object] = {}  # the page's st.cache_data of a layer's most active neurons

        def most_active_of(layer: int):
            if layer not in layer_cache:
                layer_cache[layer] = most_active(self.store, sweep_id, layer)
            return layer_cache[layer]

        def core(layer: int, neuron: int | None = None) -> None:
            """The page's rerun: its sweep, answers, the layer's most active neurons, one map, matches, lens."""
            found = find_sweep(self.model, self.store, grid)
            self.store.sweep_info(found)
            prompts = self.store.cached_prompts(found)
            top = most_active_of(layer)
            neuron = int(top.iloc[0]["neuron"]) if neuron is None else neuron
            self.store.stored_neurons(found)
            load_neuron_map(self.store, found, layer, neuron, "K", prompts=prompts)
            neuron_matches(self.store, found, layer, neuron)
            number_line(self.model, layer, neuron)

        def parsed(option: str) -> tuple[int, int]:
            layer, neuron = option.split()[0][1:].split("N")
            return int(layer), int(neuron)

        picker = need(widget(self.page, "stSelectbox", "Most active neurons of the layer").locator(
            '[role="combobox"]'), "most-active-neuron picker")
        for i in range(self.args.repeats):
            picker.click()
            option = need(self.page.locator('[role="option"]').nth(i + 1), "most-active-neuron options")
            text = option.inner_text()
            self.measure(neuron_row, option.click, lambda text=text: core(*parsed(text)))
        layers = need(widget(self.page, "stSelectbox", "Layer").locator('[role="combobox"]'), "layer picker")
        for i in range(self.args.repeats):
            target = [2, 1, 0, 3][i % 4]

            def pick(target=target) -> None:
                layers.click()
                self.page.locator('[role="option"]').filter(has_text=exactly(str(target))).first.click()

            self.measure(layer_row, pick, lambda target=target: core(target))

    def ablation_lab(self) -> None:
        from neurolab.analysis.ablation import ablate_grid, neuron_ablation
        from neurolab.analysis.predict import report
        from neurolab.analysis.sweep import grid_for
        from neurolab.capture.interventions import Intervention, parse_neurons

        warm = self.row("lab_warm")
        new = self.row("lab_new")
        mean = self.row("lab_mean")
        off = self.row("lab_off")
        again = self.row("lab_again")
        grid = grid_for(self.model, "+", 100)
        layer = self.args.ablate_layer

        def core(typed: str, mode: str) -> None:
            chosen = neuron_ablation(list(parse_neurons(typed)), mode, grid, "", "manual")
            self.store.save_intervention(chosen.to_json(), chosen.tensors())
            Intervention.from_json(*self.store.load_intervention(chosen.key))  # the sidebar's active ablation
            ablate_grid(self.model, self.store, "+", chosen, 100, control_seed=0)
            report(self.model, PROMPT), report(self.model, PROMPT, intervention=chosen)

        self.go("Ablation Lab")
        need(widget(self.page, "stRadio", "Neurons"), "neuron source")
        self.setup_step(lambda: choose_radio(self.page, "Neurons", "typed"))
        need(text_input(self.page, "Neurons"), "typed neuron list")
        switch = need(toggle(self.page, "Ablation on"), "ablation toggle")

        def typed_ablation(typed: str, row: Row) -> None:
            self.setup_step(lambda: fill_and_submit(self.page, "Neurons", typed))
            self.measure(row, switch.click, lambda: core(typed, "zero"))

        typed_ablation(f"L{layer}N12, L{layer}N40", warm)
        self.settle(switch.click)  # off
        for i in range(self.args.repeats):
            typed = f"L{layer}N{100 + 2 * i}, L{layer}N{101 + 2 * i}"
            typed_ablation(typed, new)
            if not toggle_checked(self.page, "Ablation on"):
                raise RuntimeError("the toggle did not turn on")
            self.measure(mean, lambda: choose_radio(self.page, "Ablation", "mean"), lambda typed=typed: core(typed,
                                                                                                              "mean"))
            self.measure(off, switch.click, lambda: None)
            self.measure(again, switch.click, lambda typed=typed: core(typed, "mean"))
            self.settle(lambda: choose_radio(self.page, "Ablation", "zero"))
            self.settle(switch.click)  # off, for the next new ablation and the other pages
        if toggle_checked(self.page, "Ablation on"):
            self.settle(switch.click)

    def mathneuro(self) -> None:
        from neurolab.analysis.atlas import atlas
        from neurolab.analysis.mathneuro import (
            DEFAULT_KS,
            by_matrix,
            edit,
            math_specific,
            scores_for,
            stored_accuracy,
            summary,
        )
        from neurolab.tasks.samples import load_samples

        cold = self.row("mn_cold")
        first = self.row("mn_first")
        notch = self.row("mn_notch")
        evaluate = self.row("mn_evaluate")
        apply = self.row("mn_apply")
        ks = list(DEFAULT_KS)

        def core(seed: int, k: float, step: str = "score") -> None:
            """What the page computes for one step: "score" (new samples: the scores, the K table, the masks of K),
            "notch" (the masks of another K: the scores come from the store), "evaluate" (the edit's accuracy and
            the clean model's), "apply" (the edit saved)."""
            samples = load_samples(None, None, n=100, seed=seed, single=False,
                                   max_single_token=self.model.max_single_token)
            math_scores, general_scores = scores_for(self.model, samples, self.store)
            if step == "score":
                summary(math_scores, general_scores, DEFAULT_KS)
                atlas(self.store, self.model.fingerprint)
            specific = math_specific(math_scores, general_scores, k)
            if step in ("score", "notch"):
                by_matrix(self.model, specific)
            edited = edit(specific, 0.0, f"MathNeuro K={k:g} x0", "mathneuro")
            if step == "evaluate":
                stored_accuracy(self.model, self.store), stored_accuracy(self.model, self.store, edited)
            if step == "apply":
                self.store.save_intervention(edited.to_json(), edited.tensors())

        self.go("MathNeuro")
        need(widget(self.page, "stNumberInput", "Seed"), "sample seed")
        score = need(toggle(self.page, "Score the weights"), "'Score the weights' toggle")
        for i in range(self.args.repeats + 1):
            seed = i  # run 0: the cold store
            if toggle_checked(self.page, "Score the weights"):
                self.settle(score.click)
            self.setup_step(lambda seed=seed: set_number(self.page, "Seed", seed))
            self.measure(cold if i == 0 else first, score.click, lambda seed=seed: core(seed, 0.01))
            if i == 0:  # the cold run counts for the first score only
                continue
            need(widget(self.page, "stSlider", "K"), "K slider")
            start = float(slider_value(self.page, "K") or 0.01)
            k = ks[min(ks.index(start) + 1, len(ks) - 1)] if start in ks else 0.025
            self.measure(notch, lambda: slider_key(self.page, "K", "ArrowRight"),
                         lambda seed=seed, k=k: core(seed, k, "notch"))
            self.measure(evaluate, need(button(self.page, "Evaluate x0 at K="), "'Evaluate' button").click,
                         lambda seed=seed, k=k: core(seed, k, "evaluate"))
            applied = need(toggle(self.page, "Apply this edit on every page"), "'Apply this edit' toggle")
            self.measure(apply, applied.click, lambda seed=seed, k=k: core(seed, k, "apply"))
            self.settle(applied.click)  # off again
            self.settle(lambda: slider_key(self.page, "K", "ArrowLeft"))
        if toggle_checked(self.page, "Score the weights"):
            self.settle(score.click)
        if cold.browser:  # the cold run is one figure, not part of the "new samples" median
            cold.note = "one run"

    def circuit(self) -> None:
        from neurolab.analysis.classification import ClassifySettings
        from neurolab.analysis.knockout import heuristic_knockout

        cold = self.row("knockout_cold")
        row = self.row("knockout")
        self.go("Circuit")
        knockouts = need(tab(self.page, "Knockouts"), "Knockouts tab")
        knockouts.click()
        run = need(button(self.page, "Heuristic knockout"), "heuristic knockout button")
        top_label = "Top neurons per layer (classification)"
        need(widget(self.page, "stNumberInput", top_label), "top-N input")

        def core(top: int) -> None:
            heuristic_knockout(self.model, self.store, "+", 100, settings=ClassifySettings(top_n=top))

        for i in range(self.args.repeats + 1):
            top = 200 - i
            if i:
                self.setup_step(lambda top=top: set_number(self.page, top_label, top))
                if not run.is_visible():
                    knockouts.click()
            self.measure(cold if i == 0 else row, run.click, lambda top=top: core(top))
            if not self.page.locator('[data-testid="stPlotlyChart"]').count():
                raise RuntimeError("no knockout chart after the click")
        cold.note = "one run"

    # -- the whole run ---------------------------------------------------------------------------------------
    def run(self) -> None:
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            try:
                self.section("first page", ["first_page"], lambda: self.open_server(playwright, browser))
                if self.server is None:
                    return
                self.page.set_default_timeout(60_000)
                self.section("warm page switch", ["warm_switch"], self.page_switch)
                self.section("home prompt", ["new_prompt"], self.new_prompt)
                self.section("Operand Grid", ["grid_first_sweep", "grid_neuron", "grid_layer"], self.operand_grid)
                self.section("Ablation Lab", ["lab_warm", "lab_new", "lab_mean", "lab_off", "lab_again"],
                             self.ablation_lab)
                self.section("MathNeuro", ["mn_cold", "mn_first", "mn_notch", "mn_apply"], self.mathneuro)
                self.section("Circuit", ["knockout_cold", "knockout"], self.circuit)
            finally:
                if self.server is not None:
                    self.server.close()
                browser.close()
                self.tmp.cleanup()

    def report(self) -> None:
        print(f"\nMedians of {self.args.repeats} runs (settle quiet window {self.args.quiet} s, not counted); "
              f"core = the same neurolab calls in-process; ratio = browser / core (-: core under {RATIO_FLOOR} s, "
              "see the overhead); overhead = browser - core")
        header = ("interaction", "browser", "core", "ratio", "overhead", "budget", "verdict (runs)")
        lines = []
        for row in self.rows.values():
            f = row.figures()
            if row.status != "ok" or f["browser_s"] is None:
                lines.append((row.label, row.status, "", "", "", budget(row.budget), row.note))
                continue
            ratio = f"{f['ratio']:.2f}x" if f["ratio"] else "-"
            over = f"{f['overhead_s']:+.2f} s" if f["overhead_s"] is not None else ""
            verdict = "" if f["met"] is None else ("met" if f["met"] else "NOT met")
            runs = f"n={len(row.browser)}" + (f", {row.note}" if row.note else "")
            lines.append((row.label, f"{f['browser_s']:.2f} s", f"{f['core_s']:.2f} s" if f["core_s"] is not None
                          else "", ratio, over, budget(row.budget), f"{verdict} ({runs})"))
        widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
        for line in [header, *lines]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
        if self.args.json:
            print(json.dumps({"repeats": self.args.repeats, "quiet_s": self.args.quiet,
                              "interactions": {k: r.figures() for k, r in self.rows.items()}}))


def budget(seconds: float | None) -> str:
    return f"<= {seconds:g} s" if seconds is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per interaction (medians)")
    parser.add_argument("--quiet", type=float, default=1.0,
                        help="seconds without a DOM or websocket change before a page counts as settled (0.5-1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one interaction may take to settle")
    parser.add_argument("--ablate-layer", type=int, default=3, help="the layer of the Ablation Lab's typed neurons")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object at the end")
    args = parser.parse_args()
    bench = Bench(args)
    started = time.perf_counter()
    bench.run()
    bench.report()
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
