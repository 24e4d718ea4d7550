"""The dashboard's one state (pages/state.py): kept across pages, read from a link, written to the URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
HOME, GRID = (str(ROOT / p) for p in ("app.py", "pages/2_Operand_Grid.py"))


pytestmark = pytest.mark.usefixtures("pages_store")


def test_a_link_opens_its_view_and_the_url_follows_the_state(embedded):
    at = AppTest.from_file(GRID, default_timeout=300)
    at.query_params.update({"op": "*", "max_op": "20", "neuron": "L3N12"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="op").value == "*" and at.session_state["neuron"] == "L3N12"
    assert at.button(key="run_sweep")  # the * grid of 20 is not swept yet: the page offers it, for that grid
    at.button(key="run_sweep").click().run()
    assert not at.exception and "L3N12" in at.selectbox(key="neuron").value
    at.selectbox(key="op").set_value("-").run()
    assert at.query_params["op"] == "-" and at.query_params["neuron"] == "L3N12"  # the URL is the view



def test_the_back_button_steps_back_a_view(embedded):
    """The browser's back button reruns the page with the previous query string: the state follows it (a setting
    the older URL leaves out goes back to its default); a page switch (no query string) keeps the state."""
    at = AppTest.from_file(HOME, default_timeout=300)
    at.query_params.update({"prompt": "7*8="})
    at.run()
    at.text_input(key="prompt").set_value("12-5=").run()
    assert at.query_params["prompt"] == "12-5="
    at.query_params.clear()
    at.query_params.update({"prompt": "7*8="})  # what the browser sends after "back"
    at.run()
    assert not at.exception and at.text_input(key="prompt").value == "7*8=" and "7*8=" in at.markdown[0].value
    at.query_params.clear()
    at.query_params.update({"op": "-"})  # an older view whose prompt was the default
    at.run()
    assert at.text_input(key="prompt").value == "23+45=" and at.session_state["op"] == "-"
    at.query_params.clear()  # a page switch: the state stays, and is published again
    at.run()
    assert at.session_state["op"] == "-" and at.query_params["op"] == "-"

def test_a_malformed_link_says_what_it_ignored(embedded):
    at = AppTest.from_file(HOME, default_timeout=300)
    at.query_params.update({"op": "%", "colour": "red", "prompt": "1+1="})
    at.run()
    assert not at.exception
    message = " ".join(w.value for w in at.warning)
    assert "`op=%`" in message and "unknown setting `colour`" in message
    assert at.text_input(key="prompt").value == "1+1="  # what was valid is kept


def test_settings_and_the_ablation_survive_leaving_the_page(embedded):
    from pages import ACTIVE_KEY

    at = AppTest.from_file(HOME, default_timeout=300)
    at.run()
    at.switch_page("pages/4_Ablation_Lab.py").run()
    at.radio(key="lab_source").set_value("typed").run()
    at.text_input(key="lab_typed").set_value("L3N1, L3N2, L3N3").run()
    at.radio(key="lab_mode").set_value("mean")
    at.number_input(key="max_op").set_value(30).run()
    at.toggle(key="ablation_on").set_value(True).run()
    assert not at.exception and at.session_state[ACTIVE_KEY]
    key = at.session_state[ACTIVE_KEY]
    at.switch_page("pages/0_Home.py").run()  # the home page, in the same session
    assert not at.exception and "under the ablation" in at.markdown[0].value
    at.switch_page("pages/4_Ablation_Lab.py").run()
    assert not at.exception
    assert at.toggle(key="ablation_on").value and at.session_state[ACTIVE_KEY] == key
    assert at.radio(key="lab_mode").value == "mean" and at.number_input(key="max_op").value == 30
    assert "mean-ablated" in " ".join(w.value for w in at.sidebar.warning)
