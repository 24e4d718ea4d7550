"""The dashboard's one state: every setting that crosses pages, kept across pages and mirrored in the URL.

Streamlit forgets a widget's value when a page without that widget runs; every page calls :func:`begin` first (from
``pages.model_sidebar``), which re-asserts every key below so that nothing resets on the way back, and on a
session's first run reads the URL's query string into them (a shared link opens the same view; a reload keeps it).
:func:`publish` writes the current values back to the URL (defaults left out). Widgets bind to these keys and take
their values from here, never the other way round; pages name the keys through the constants below, not strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from neurolab.analysis.predict import EXAMPLE_PROMPT
from neurolab.models.adapters import neuron_label, parse_neuron_label
from neurolab.tasks.arithmetic import OPERATORS
from neurolab.tasks.grid import TEMPLATES

MODEL = "model_name"
OP = "op"
MAX_OP = "max_op"
TEMPLATE = "template"
LAYER = "layer"
NEURON = "neuron"
PROMPT = "prompt"
ACTIVE = "active_ablation"  # the key of the stored intervention active in this session (None: the clean model)
PICKS = "ablation_picks"  # neurons picked on any page for the Ablation Lab, as "L3N12" labels
MAX_PROMPT = 60  # characters; a prompt is a short arithmetic expression


def _operator(text: str) -> str:
    if text not in OPERATORS:
        raise ValueError(f"use one of {' '.join(OPERATORS)}")
    return text


def _template(text: str) -> str:
    if text not in (*TEMPLATES, "custom"):
        raise ValueError(f"use one of {', '.join(TEMPLATES)}, custom")
    return text


def _max_op(text: str) -> int:
    value = int(text)
    if not 2 <= value <= 1000:
        raise ValueError("use 2..1000")
    return value


def _neuron(text: str) -> str:
    return neuron_label(*parse_neuron_label(text))


def _prompt(text: str) -> str:
    if len(text) > MAX_PROMPT:
        raise ValueError(f"at most {MAX_PROMPT} characters")
    return text


def _picks(text: str) -> list[str]:
    return [_neuron(part) for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Param:
    """One setting: its session key, its name in the URL, its default, how it reads from and writes to text."""

    key: str
    url: str
    default: Any
    parse: Callable[[str], Any] = str
    format: Callable[[Any], str] = str


PARAMS: tuple[Param, ...] = (
    Param(MODEL, "model", "embedded"),
    Param(OP, "op", "+", _operator),
    Param(MAX_OP, "max_op", 100, _max_op),
    Param(TEMPLATE, "template", "plain", _template),
    Param(LAYER, "layer", None, int),
    Param(NEURON, "neuron", None, _neuron),
    Param(PROMPT, "prompt", EXAMPLE_PROMPT, _prompt),
    Param(ACTIVE, "ablation", None),
    Param(PICKS, "picks", [], _picks, ",".join),
)
#: settings of one page that are remembered on return but not put in the URL
REMEMBERED = ("grid_kind", "grid_typed", "grid_view", "lab_mode", "lab_seed", "lab_source", "lab_typed", "lab_layer",
              "lab_top_n", "lab_name", "lab_view", "ablation_on", "per_layer", "_model_input", "mn_source", "mn_single",
              "mn_samples", "mn_seed", "mn_score", "mn_k", "mn_how", "mn_factor", "mn_apply", "mn_live",
              "anatomy_view")


def begin() -> None:
    """Every page's first call: the URL read on a session's first run and after the browser's back or forward button
    (the query string then differs from the one last published), every setting kept across pages."""
    state = st.session_state
    url = {name: st.query_params[name] for name in st.query_params}
    first = "_state_begun" not in state
    if first or (url and url != state.get("_published")):  # a link, a reload, or a step back or forward
        state["_state_begun"] = True
        _read(url, keep_absent=first)
    for param in PARAMS:
        state.setdefault(param.key, param.default)
    for key in [param.key for param in PARAMS] + [key for key in REMEMBERED if key in state]:
        state[key] = state[key]  # a widget's value survives pages that do not show the widget


def _read(url: dict[str, str], keep_absent: bool) -> None:
    """The URL's settings into the state; a setting the URL leaves out is its default (a view's URL names all that
    differs from the defaults), except on a session's first run, where nothing else is set yet."""
    state, problems = st.session_state, []
    known = {param.url: param for param in PARAMS}
    for name, text in url.items():
        param = known.get(name)
        if param is None:
            problems.append(f"unknown setting `{name}` (known: {', '.join(known)})")
            continue
        try:
            state[param.key] = param.parse(text)
        except ValueError as error:
            problems.append(f"`{name}={text}`: {error}; using {param.default!r}")
    if not keep_absent:
        for param in PARAMS:
            if param.url not in url:
                state[param.key] = param.default
    if problems:
        st.warning("The link's settings were partly ignored: " + "; ".join(problems))


def publish() -> None:
    """The URL's query string: every setting that differs from its default. Streamlit pushes a changed query string
    onto the browser's history, so the back button steps back a view."""
    wanted = {}
    for param in PARAMS:
        value = st.session_state.get(param.key, param.default)
        if value not in (param.default, None, []):
            wanted[param.url] = param.format(value)
    st.session_state["_published"] = wanted
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


def get(key: str) -> Any:
    return st.session_state.get(key)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value
