"""The dashboard end to end in a real browser (Debian's chromium through Playwright) on a real server.

One server per module (temporary store, embedded model); each test opens its own browser context (its own
Streamlit session) and asserts on what a user sees: text, drawn charts, the value a widget shows. Every step is
screenshotted into ``tests/artifacts/`` (ignored by git), with the server's log beside them.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import sync_playwright

from .browser import (
    ARTIFACTS,
    Server,
    button,
    choose_radio,
    fill_and_submit,
    launch_browser,
    main_text,
    nav_link,
    new_page,
    screenshot,
    select_option,
    selected,
    settle,
    toggle,
    toggle_checked,
)

TIMEOUT = 240.0  # s: the first page imports torch and loads the model; a sweep runs on 2 cores
QUIET = 0.5  # s without a change before a page counts as settled
PREDICTION = re.compile(r"(\S+) → model says (\S+) \(([\d.]+)%\)")


@pytest.fixture(scope="module")
def server():
    with Server(log=ARTIFACTS / "browser-server.log", health_timeout=120) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield new_page(context)
    context.close()


def open_app(page, url: str, path: str = "") -> None:
    settle(page, lambda: page.goto(url + path), quiet=QUIET, timeout=TIMEOUT)
    assert_no_exception(page)


def go(page, label: str) -> None:
    """Open a page from the sidebar's navigation (same session, as a user clicks it)."""
    settle(page, lambda: nav_link(page, label).click(), quiet=QUIET, timeout=TIMEOUT)
    assert_no_exception(page)


def assert_no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def heatmaps(page) -> int:
    """Plotly charts drawing a heatmap trace."""
    return page.locator('[data-testid="stPlotlyChart"]:has(.heatmaplayer .hm)').count()


def prediction(page) -> re.Match:
    found = PREDICTION.search(main_text(page))
    assert found, main_text(page)[:500]
    return found


def run_sweep_if_offered(page) -> None:
    """The Operand Grid offers to run the sweep when the grid is not stored yet: a user clicks it."""
    offer = page.locator('[data-testid="stButton"] button').filter(has_text="Run the sweep")
    if offer.count():
        settle(page, offer.first.click, quiet=QUIET, timeout=TIMEOUT)
        assert_no_exception(page)


def test_home_prompt_shows_prediction_and_neurons(server, page):
    open_app(page, server.url)
    screenshot(page, "a-home-first")
    settle(page, lambda: fill_and_submit(page, "Arithmetic prompt", "37+25="), quiet=QUIET, timeout=TIMEOUT)
    screenshot(page, "a-home-prompt")
    assert_no_exception(page)
    found = prediction(page)
    assert found[1] == "37+25=" and found[2] == "62"  # the embedded model gets it right
    neurons = page.locator('[data-testid="stPlotlyChart"]').filter(has_text=re.compile(r"L3N\d+"))
    assert neurons.count() >= 1 and neurons.first.locator(".main-svg").count() >= 1


def test_operand_grid_shows_a_heatmap(server, page):
    open_app(page, server.url)
    go(page, "Operand Grid")
    screenshot(page, "b-grid-open")
    run_sweep_if_offered(page)
    screenshot(page, "b-grid-heatmap")
    assert heatmaps(page) >= 1
    assert "Model accuracy on this grid" in main_text(page)


def shared_view(page) -> tuple[str, str]:
    return selected(page, "Operator"), page.locator('[data-testid="stMain"]').text_content()


SHARED = "/Operand_Grid?op=*&neuron=L3N12"


def open_shared(page, url: str) -> None:
    open_app(page, url, SHARED)
    screenshot(page, "c-shared-open")
    run_sweep_if_offered(page)
    screenshot(page, "c-shared-view")


def assert_shared_view(page) -> None:
    op, text = shared_view(page)
    assert op == "*", f"the operator select shows {op!r}, not the link's *"
    assert "L3N12" in text, "the link's neuron L3N12 is not shown"
    assert heatmaps(page) >= 1


def test_shared_url_opens_that_view(server, page):
    open_shared(page, server.url)
    assert_shared_view(page)


def test_reload_keeps_the_view(server, page):
    open_shared(page, server.url)
    settle(page, page.reload, quiet=QUIET, timeout=TIMEOUT)
    screenshot(page, "d-reloaded")
    assert_no_exception(page)
    assert_shared_view(page)



def test_the_back_button_steps_back_a_view(server, page):
    open_app(page, server.url)
    for prompt in ("11+22=", "40-15="):
        settle(page, lambda prompt=prompt: fill_and_submit(page, "Arithmetic prompt", prompt), quiet=QUIET,
               timeout=TIMEOUT)
    assert prediction(page)[1] == "40-15=" and "prompt=40-15%3D" in page.url
    settle(page, page.go_back, quiet=QUIET, timeout=TIMEOUT)
    screenshot(page, "g-back")
    assert_no_exception(page)
    assert prediction(page)[1] == "11+22=", "the back button did not go back to the previous prompt"
    assert "prompt=11%2B22%3D" in page.url

def test_ablation_changes_the_prediction_and_stays_on_across_pages(server, page):
    open_app(page, server.url)
    clean = prediction(page)
    go(page, "Ablation Lab")
    settle(page, lambda: choose_radio(page, "Neurons", "layer top-N"), quiet=QUIET, timeout=TIMEOUT)
    screenshot(page, "e-lab-top-n")
    assert re.search(r"50 neurons \(top-50 of layer 3\)", main_text(page)), main_text(page)[:800]
    settle(page, lambda: toggle(page, "Ablation on").click(), quiet=QUIET, timeout=TIMEOUT)
    screenshot(page, "e-lab-on")
    assert_no_exception(page)
    assert toggle_checked(page, "Ablation on")
    text = main_text(page)
    assert "Accuracy, ablated" in text and "Effect of the ablation" in text
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "Ablation active" in sidebar

    go(page, "Home")  # the home page: its prediction follows the ablation
    screenshot(page, "e-home-ablated")
    ablated = prediction(page)
    assert ablated[1] == clean[1]
    assert (ablated[2], ablated[3]) != (clean[2], clean[3]), "the prediction did not change under the ablation"
    assert "under the ablation" in main_text(page)

    go(page, "Ablation Lab")  # and back: the ablation is still on, and the page says so
    screenshot(page, "e-lab-back")
    assert "Ablation active" in page.locator('[data-testid="stSidebar"]').inner_text()
    assert toggle(page, "Ablation on").count() == 1, "the Ablation Lab came back without its toggle (reset)"
    assert toggle_checked(page, "Ablation on"), "the Ablation Lab came back with its toggle off"


def test_two_sessions_run_the_same_sweep_at_once(server, browser):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        pages = [new_page(context) for context in contexts]
        for page in pages:
            open_app(page, server.url, "/Operand_Grid")
            settle(page, lambda page=page: select_option(page, "Operator", "-"), quiet=QUIET, timeout=TIMEOUT)
            assert button(page, "Run the sweep").count() == 1, "the - grid is stored already: nothing to race"
        first, second = pages

        def both() -> None:
            button(first, "Run the sweep").click()
            button(second, "Run the sweep").click()

        settle(first, both, quiet=QUIET, timeout=TIMEOUT)
        settle(second, quiet=QUIET, timeout=TIMEOUT)
        for name, page in zip(("first", "second"), pages):
            screenshot(page, f"f-sweep-{name}")
            assert_no_exception(page)
            assert heatmaps(page) >= 1
            assert selected(page, "Operator") == "-"
    finally:
        for context in contexts:
            context.close()
