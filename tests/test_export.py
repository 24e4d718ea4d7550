"""Exported files are real: PNG/SVG/PDF rendered by kaleido with Debian's chromium, a standalone HTML that draws in
the browser offline, data and provenance that read back, a report zip whose summary lists exactly its files, and a
clear message (with HTML and data still exported) when no chromium is found."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from playwright.sync_api import sync_playwright

from neurolab.analysis.neuron_maps import neuron_map
from neurolab.errors import InputError, NeurolabError
from neurolab.export import render as render_module
from neurolab.export.bundle import DATA_FORMATS, FIGURE_FORMATS, PROVENANCE, SUMMARY, Export, report_zip
from neurolab.export.provenance import Provenance
from neurolab.export.render import PNG_SCALE, ExportError, render
from neurolab.export.style import COLORBAR_PX, publication
from neurolab.store import Store
from neurolab.viz.figures import grid_heatmap

from .browser import launch_browser

MAX_OP = 40
LAYER, NEURON = 1, 12


@pytest.fixture(scope="module")
def heatmap(embedded, tmp_path_factory) -> Export:
    """The Operand Grid's heatmap of a real neuron of the embedded model, with its data and provenance."""
    store = Store(tmp_path_factory.mktemp("export") / "store.duckdb")
    nmap = neuron_map(embedded, store, "+", LAYER, NEURON, max_op=MAX_OP)
    store.close()
    provenance = Provenance.of("heatmap", embedded, {"neuron": nmap.label, "op": "+", "max_op": MAX_OP, "kind": "K"})
    return Export(f"{nmap.label}-K-add", provenance, nmap.to_frame(), grid_heatmap(nmap, MAX_OP, "+"))


@pytest.fixture(scope="module")
def rendered(heatmap) -> dict[str, bytes]:
    return {fmt: heatmap.file(fmt) for fmt in FIGURE_FORMATS}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_static_formats_are_valid_files(rendered, heatmap):
    styled = publication(heatmap.figure)
    assert png_size(rendered["png"]) == (styled.layout.width * PNG_SCALE, styled.layout.height * PNG_SCALE)
    assert rendered["pdf"].startswith(b"%PDF") and b"%%EOF" in rendered["pdf"][-32:]
    root = ElementTree.fromstring(rendered["svg"])
    assert root.tag.endswith("}svg") or root.tag == "svg"
    assert (float(root.get("width")), float(root.get("height"))) == (styled.layout.width, styled.layout.height)
    assert b"L1N12 K map" in rendered["svg"]  # the title, as text: a vector figure
    for fmt in ("png", "svg", "pdf"):
        assert len(rendered[fmt]) > 8_000, (fmt, len(rendered[fmt]))


def test_two_columns_render_wider(heatmap):
    one, two = publication(heatmap.figure, 1), publication(heatmap.figure, 2)
    assert (one.layout.width, two.layout.width) == (336, 691)  # 3.5 in and 7.2 in at 96 px/in
    assert png_size(render(heatmap.figure, "png", columns=2))[0] == 691 * PNG_SCALE


def test_concurrent_exports_each_get_their_own_figure(heatmap):
    """Streamlit renders from several threads: one browser, and every caller gets its own format back."""
    formats = ["png", "svg", "pdf"] * 2
    with ThreadPoolExecutor(len(formats)) as pool:
        results = list(pool.map(lambda fmt: render(heatmap.figure, fmt), formats))
    magic = {"png": b"\x89PNG", "svg": b"<svg", "pdf": b"%PDF"}
    for fmt, data in zip(formats, results):
        assert data.lstrip().startswith(magic[fmt]), fmt


def test_html_draws_the_chart_in_a_browser_offline(rendered, tmp_path):
    html = rendered["html"].decode()
    assert html.lstrip().lower().startswith("<!doctype html>") and not re.search(r"<script[^>]+src=\"https?:", html)
    path = tmp_path / "figure.html"
    path.write_bytes(rendered["html"])
    requested = []
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page()
            page.route(re.compile(r"^https?://"), lambda route: (requested.append(route.request.url), route.abort()))
            page.goto(path.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=20_000)
            assert page.locator(".js-plotly-plot .hm image").count() == 1  # the heatmap itself is drawn
            assert "L1N12 K map" in page.locator(".js-plotly-plot .gtitle").text_content()
        finally:
            browser.close()
    assert requested == []


def test_provenance_round_trips(heatmap):
    text = heatmap.file(PROVENANCE).decode()
    back = Provenance.from_json(text)
    assert back == heatmap.provenance
    assert back.model["fingerprint"] and back.selection["neuron"] == "L1N12"


def test_write_writes_every_format(heatmap, rendered, tmp_path):
    written = heatmap.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(heatmap.filename(fmt) for fmt in heatmap.formats)
    assert set(heatmap.formats) == {*FIGURE_FORMATS, *DATA_FORMATS, PROVENANCE}
    assert (tmp_path / heatmap.filename("png")).read_bytes()[:4] == b"\x89PNG"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / heatmap.filename("parquet")), heatmap.data)
    csv = pd.read_csv(tmp_path / heatmap.filename("csv"))
    assert list(csv.columns) == list(heatmap.data.columns) and len(csv) == len(heatmap.data)
    assert np.allclose(csv["K"], heatmap.data["K"], atol=1e-6)
    assert Provenance.read(tmp_path / heatmap.filename(PROVENANCE)) == heatmap.provenance


def listed_files(summary: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", summary, re.M)


def table_export(heatmap: Export) -> Export:
    """A table without a figure (an Atlas-like count), made from the same neuron map."""
    counts = heatmap.data.groupby("correct").size().reset_index(name="prompts")
    provenance = Provenance(kind="atlas", selection={"op": "+"}, model=heatmap.provenance.model)
    return Export("atlas-add", provenance, counts)


def test_report_zip_holds_exactly_what_its_summary_lists(heatmap):
    exports = [heatmap, table_export(heatmap)]
    archive = zipfile.ZipFile(io.BytesIO(report_zip(exports, "L1N12 on the + grid", ["accuracy 0.97"])))
    names = archive.namelist()
    summary = archive.read(SUMMARY).decode()
    assert sorted(listed_files(summary)) == sorted(names) and len(set(names)) == len(names)
    assert {heatmap.filename(fmt) for fmt in FIGURE_FORMATS} <= set(names)
    assert "atlas-add.csv" in names and "atlas-add.png" not in names
    assert summary.startswith("# L1N12 on the + grid") and "- accuracy 0.97" in summary
    assert heatmap.provenance.model["fingerprint"] in summary and "clean model" in summary
    assert archive.read(heatmap.filename("png"))[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="both named"):
        report_zip([heatmap, heatmap], "twice")


def test_publication_restyles_a_copy(heatmap):
    figure = heatmap.figure
    before = figure.to_json()
    styled = publication(figure)
    assert figure.to_json() == before  # the page keeps drawing the original
    assert styled.layout.template.layout.paper_bgcolor == "white"
    assert styled.layout.font.family.startswith("Arial") and styled.layout.font.size == 11
    assert styled.data[0].colorbar.title.text == "K" and "L1N12 K map" in styled.layout.title.text
    margin = styled.layout.margin  # a square operand grid stays square beside its colour bar
    assert styled.layout.width - margin.l - margin.r - COLORBAR_PX == styled.layout.height - margin.t - margin.b
    untitled = go.Figure(go.Heatmap(z=[[0, 1], [1, 0]], name="Δ p(answer)"))
    long_title = "Accuracy after multiplying the selected weights by 0.1, against K, on every operator"
    untitled.update_layout(title=long_title)
    restyled = publication(untitled)
    assert restyled.data[0].colorbar.title.text == "Δ p(answer)"
    assert "<br>" in restyled.layout.title.text and restyled.layout.title.text.replace("<br>", " ") == long_title
    with pytest.raises(InputError, match="columns must be 1 or 2"):
        publication(figure, 3)
    with pytest.raises(InputError, match="formats: png, svg, pdf, html"):
        render(figure, "eps")


def test_without_chromium_static_formats_say_how_and_the_rest_still_exports(heatmap, tmp_path, monkeypatch):
    render_module.stop()  # the next static export looks for chromium again
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(ExportError, match="apt-get install chromium") as caught:
        heatmap.file("png")
    assert isinstance(caught.value, NeurolabError) and "BROWSER_PATH" in str(caught.value)
    assert "HTML, CSV, Parquet" in str(caught.value)
    assert heatmap.file("html").lstrip().lower().startswith(b"<!doctype html>")
    assert heatmap.file("csv").startswith(b"op1,op2,answer")
    archive = zipfile.ZipFile(io.BytesIO(report_zip([heatmap], "no chromium")))
    summary = archive.read(SUMMARY).decode()
    assert sorted(listed_files(summary)) == sorted(archive.namelist())
    assert heatmap.filename("html") in archive.namelist() and heatmap.filename("png") not in archive.namelist()
    assert "PNG, SVG and PDF are not included" in summary


def test_a_chromium_that_does_not_start_is_an_error_not_a_hang(heatmap, monkeypatch):
    render_module.stop()
    monkeypatch.setenv("BROWSER_PATH", "/bin/false")  # an executable that exits at once
    with pytest.raises(ExportError, match="/bin/false did not start"):
        heatmap.file("svg")
    assert heatmap.file("html").lstrip().lower().startswith(b"<!doctype html>")
