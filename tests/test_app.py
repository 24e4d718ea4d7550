"""The dashboard, driven for real: Streamlit's AppTest on the embedded model, and a real server's health check."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("pages_store")


def home() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_answer_and_neurons_for_the_default_prompt(embedded):
    at = home()
    assert not at.error
    summary = at.markdown[0].value
    assert "23+45=" in summary and "model says **68**" in summary and "correct" in summary
    charts = at.get("plotly_chart")
    assert len(charts) == 2 and any("classif" in i.value for i in at.info)  # no bag of heuristics before classifying
    import json

    # the neurons chart has one panel per layer of the embedded model
    figure = json.loads(charts[1].proto.spec)
    assert len(figure["data"]) == embedded.n_layers
    assert all(len(trace["y"]) == 10 for trace in figure["data"])
    assert all(y.startswith("L") and "N" in y for y in figure["data"][0]["y"])


def test_typing_a_prompt_updates_the_page():
    at = home()
    at.text_input(key="prompt").set_value("7*8=").run()
    assert "model says **56**" in at.markdown[0].value
    at.slider(key="per_layer").set_value(5).run()
    import json

    figure = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert all(len(trace["y"]) == 5 for trace in figure["data"])


@pytest.mark.parametrize("prompt, message", [
    ("23+", "Malformed prompt"), ("hello", "not an arithmetic prompt"), ("5/0=", "division by zero"),
    ("1500+5=", "first operand 1500 is not a single token"),
])
def test_malformed_prompt_gets_a_clear_message(prompt, message):
    at = home()
    at.text_input(key="prompt").set_value(prompt).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.get("plotly_chart")


def test_an_answer_of_several_tokens_still_shows_the_prediction():
    at = home()
    at.text_input(key="prompt").set_value("97*99=").run()
    assert not at.exception and not at.error
    assert "model says" in at.markdown[0].value and "9603 is not one token" in at.markdown[0].value
    assert at.get("plotly_chart")


def test_unknown_model_is_a_message_and_embedded_recovers():
    at = home()
    at.sidebar.text_input(key="_model_input").set_value("./no/such/model").run()
    assert not at.exception
    assert "Could not load the model" in at.error[0].value
    at.sidebar.text_input(key="_model_input").set_value("embedded").run()
    assert not at.error and len(at.get("plotly_chart")) == 2


def test_model_page_describes_and_evaluates(embedded):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Model.py"), default_timeout=120)
    at.run()
    assert not at.exception
    table = at.table[0].value
    assert embedded.fingerprint in table.to_string()
    at.number_input(key="eval_sample").set_value(100)
    at.button(key="evaluate").click().run()
    frame = at.dataframe[0].value
    assert list(frame["task"]) == ["+", "-", "*", "/", "nonmath"]
    assert frame["accuracy"].min() > 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_comes_up_healthy():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.time() + 90, ""
        while time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body == "ok"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "<title>" in page.lower() or "streamlit" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_home_draws_the_prompts_bag_of_heuristics_once_classified(embedded):
    import json

    from neurolab.analysis.classification import ClassifySettings, classify_operator
    from pages import shared_store

    classify_operator(embedded, shared_store(), "+", 100, settings=ClassifySettings(), layers=[3])
    at = home()
    bag = json.loads(at.get("plotly_chart")[1].proto.spec)["data"][0]
    assert bag["type"] == "waterfall" and len(bag["x"]) >= 4  # groups, the unexplained rest, the total
    assert any(str(x).startswith("result_range") for x in bag["x"]) and "unexplained" in " ".join(map(str, bag["x"]))
