"""The publication look: what a page draws for the screen, restyled for a paper's column.

Journals set figures one column (about 3.5 in) or two columns (about 7.2 in) wide, so an export is that width at
96 px/in with fonts that stay readable after printing, on a white background. The page's figure is never changed,
because the page keeps drawing it; :func:`publication` works on a copy.
"""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

from ..errors import InputError

DPI = 96  # Plotly's layout pixels; PNG exports multiply them (neurolab.export.render.PNG_SCALE)
WIDTH_IN = {1: 3.5, 2: 7.2}
FONT = "Arial, Helvetica, sans-serif"
FONT_SIZE = {1: 11, 2: 12}
HEIGHT_PX = {1: (250, 500), 2: (300, 700)}  # the least and most height, by columns
PAGE_WIDTH_PX = 700  # what a page's figure height was chosen for (Plotly's default width)
COLORBAR_PX = 60  # a colour bar with its tick labels and title, beside the plot
LEGEND_BELOW = dict(orientation="h", x=0, xanchor="left", y=0, yref="container", yanchor="bottom")


def publication(figure: go.Figure, columns: int = 1) -> go.Figure:
    """A copy of ``figure`` sized for ``columns`` (1 or 2) of a paper: plotly_white, a sans-serif font, the title
    kept (it names the neuron and the condition) and wrapped to the width, colour bars titled, margins trimmed, and
    square heatmaps kept square."""
    if columns not in WIDTH_IN:
        raise InputError(f"columns must be 1 or 2, not {columns!r}")
    # a deep copy through a dict: go.Figure(figure) briefly pops keys out of the original's traces, a race with any
    # other thread that copies or draws the same figure
    fig = go.Figure(figure.to_dict())
    size = FONT_SIZE[columns]
    width = round(WIDTH_IN[columns] * DPI)
    subplot_titles = any(a.yref == "paper" and (a.y or 0) >= 1 for a in fig.layout.annotations)
    title = _wrapped(fig.layout.title.text, width - 64, size + 1)  # the title starts above the plot, not at 0
    title_px = (title.count("<br>") + 1) * round(1.4 * (size + 1)) + 8 if title else 0
    # fixed room for the title (Plotly's title automargin shifts heatmaps off their axes in static exports)
    above = round(1.6 * size) if subplot_titles else 4  # between the title and the plot
    margin = dict(l=48, r=8, t=8 + title_px + above, b=40)
    height = _height(fig, columns, width, margin)
    fig.update_layout(
        template="plotly_white", width=width, height=height,
        font=dict(family=FONT, size=size, color="black"), margin=margin,
        title=dict(text=title, font=dict(size=size + 1), x=0, xref="paper", xanchor="left",
                   # Plotly anchors a title of several lines by its middle, whatever yanchor says
                   y=1 - (8 + title_px / 2) / height, yref="container", yanchor="middle"),
        # one column: the legend goes under the plot rather than taking a third of its width
        legend=dict(font=dict(size=size - 1), **(LEGEND_BELOW if columns == 1 else {})),
    )
    fig.update_annotations(font=dict(size=size))  # subplot titles (make_subplots sets 16 px)
    fig.update_xaxes(automargin=True, title_standoff=4)
    fig.update_yaxes(automargin=True, title_standoff=4)
    for trace in fig.data:
        _title_colorbar(trace, size)
    if fig.layout.coloraxis.colorscale is not None or any("coloraxis" in t and t.coloraxis for t in fig.data):
        bar = fig.layout.coloraxis.colorbar
        bar.update(thickness=12, title=dict(text=bar.title.text or "value", side="right"))
    return fig


def _wrapped(title: str | None, width: int, size: int) -> str | None:
    """Long titles broken into lines that fit the width (Plotly never wraps); titles with markup are left alone."""
    if not title or "<" in title:
        return title
    return "<br>".join(textwrap.wrap(title, max(20, int(width / (0.55 * size)))))  # an average glyph: 0.55 em


def _square(fig: go.Figure) -> bool:
    """One plot whose y axis is anchored to x (an operand grid): it must stay square."""
    axes = list(fig.select_yaxes())
    return len(axes) == 1 and axes[0].scaleanchor == "x"


def _height(fig: go.Figure, columns: int, width: int, margin: dict[str, int]) -> int:
    """Square plots: the plot area as tall as it is wide beside a colour bar. Others: the page's aspect, capped."""
    if _square(fig):
        side = width - margin["l"] - margin["r"] - COLORBAR_PX
        return side + margin["t"] + margin["b"]
    least, most = HEIGHT_PX[columns]
    page_height = fig.layout.height or 450
    return int(min(most, max(least, page_height * (width / PAGE_WIDTH_PX if columns == 2 else 0.75))))


def _title_colorbar(trace, size: int) -> None:
    """A trace's colour bar (a heatmap's, or a scatter's marker scale) titled: its own title, else the trace name."""
    if "colorbar" in trace:
        bar = trace.colorbar
    elif "marker" in trace and "colorbar" in trace.marker and trace.marker.showscale:
        bar = trace.marker.colorbar
    else:
        return
    bar.update(thickness=12, tickfont=dict(size=size - 1),
               title=dict(text=bar.title.text or trace.name or "value", side="right"))
