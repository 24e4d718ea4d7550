"""Margins sized for a figure's labels, instead of Plotly's automargin.

Automargin lays a chart out, measures its tick labels, and lays it out again: in the browser every chart a page
redraws is drawn twice. In headless chromium on two cores, a 100 x 100 heatmap behind a picker settles in ~0.40 s
with automargin and ~0.26 s with these margins (``benchmarks/bench_browser.py`` measures the pages). Static exports
keep automargin (``neurolab.export.style``): they are drawn once, off screen.
"""

from __future__ import annotations

from collections.abc import Iterable

import plotly.graph_objects as go

CHAR_PX = 7  # an average character of Plotly's 12 px tick font
AXIS_TITLE_PX = 24  # an axis title and its standoff


def label_px(labels: Iterable[object], minimum: int = 2) -> int:
    """The width of the longest label, in pixels."""
    return CHAR_PX * max([minimum, *(len(str(label)) for label in labels)])


def fixed_margins(fig: go.Figure, left: int, bottom: int, top: int = 60, right: int = 10) -> go.Figure:
    """Turn automargin off on every axis and set the margins (pixels); returns the figure. ``left`` must hold the
    y tick labels and title, ``bottom`` the x tick labels and title, ``top`` the figure's title."""
    fig.update_xaxes(automargin=False)
    fig.update_yaxes(automargin=False)
    fig.update_layout(margin={"l": left, "r": right, "t": top, "b": bottom})
    return fig


def grid_margins(fig: go.Figure, max_op: int, top: int = 60) -> go.Figure:
    """An op1 x op2 map: numeric ticks of at most ``max_op - 1`` on both axes, each with a title."""
    ticks = label_px([max_op - 1])
    return fixed_margins(fig, left=ticks + AXIS_TITLE_PX + 8, bottom=20 + AXIS_TITLE_PX, top=top)
