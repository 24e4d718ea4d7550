"""Widgets every page shares (Streamlit skips ``__init__.py`` when it lists pages).

Pages lay out widgets and call :mod:`neurolab`; they hold no analysis code and never trace a model.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from neurolab.analysis.neuron_maps import most_active
from neurolab.capture import kept
from neurolab.capture.interventions import Intervention
from neurolab.errors import NeurolabError
from neurolab.models.devices import DEVICES, DTYPES
from neurolab.models.loading import LoadedModel, load_model
from neurolab.progress import Progress
from neurolab.store import Store

from .common import state

ACTIVE_KEY, PICKS_KEY = state.ACTIVE, state.PICKS


_FROZEN: set[str] = set()  # fingerprints of the models whose objects are out of Python's full collections


def _freeze_heap(model: LoadedModel) -> None:
    """A loaded model (and the stack imported for it) lives as long as the server: once per model, the heap is moved
    out of Python's full garbage collections, which otherwise scan it every few reruns and stall the server for
    300-400 ms in the middle of a page's update (measured on the embedded model; 10 ms after the freeze)."""
    if model.fingerprint not in _FROZEN:
        _FROZEN.add(model.fingerprint)
        gc.collect()
        gc.freeze()


def _remember_model() -> None:
    st.session_state[state.MODEL] = st.session_state["_model_input"].strip() or "embedded"


def model_sidebar() -> LoadedModel:
    """Every page's start: the one state (kept across pages, read from and written to the URL), then the sidebar's
    model picker; returns the loaded model or stops the page with a clear message."""
    state.begin()
    state.publish()
    st.session_state.setdefault("_model_input", st.session_state[state.MODEL])
    st.sidebar.text_input(
        "Model", key="_model_input", on_change=_remember_model,
        help="'embedded' is neurolab's own arithmetic model. Or a Hugging Face id (e.g. EleutherAI/pythia-70m, "
        "from the local cache when offline) or a local folder with safetensors weights.",
    )
    with st.sidebar.expander("Device, precision, revision", expanded=False):
        device = st.selectbox("Device", DEVICES, key="model_device", help="auto: a GPU when torch sees one")
        dtype = st.selectbox("Precision", ["auto", *DTYPES], key="model_dtype",
                             help="auto: float32 on CPU, bfloat16 on GPU. Results are cached per precision.")
        revision = st.text_input("Revision", key="model_revision",
                                 help="hub branch, tag or commit, e.g. step1000 for a Pythia training checkpoint")
    name = st.session_state[state.MODEL]
    try:
        with st.spinner(f"Loading {name} ..."):
            model = load_model(name, device=device, dtype=dtype, revision=revision.strip() or None)
    except NeurolabError as error:
        st.error(f"Could not load the model: {error}")
        st.info("Type 'embedded' to go back to the shipped model.")
        st.stop()
    _freeze_heap(model)
    _active_banner()
    st.sidebar.caption(
        f"{model.adapter.family} · {model.n_layers} layers × {model.d_mlp} neurons · "
        f"numbers 0..{model.max_single_token} single-token · {model.dtype} on {model.device} · "
        f"fingerprint `{model.fingerprint}` · kept for fast edits: {kept.describe(model.device)}"
    )
    return model


def active_intervention() -> Intervention | None:
    """The intervention active in this browser session, reloaded from the store by its key (None when off)."""
    key = st.session_state.get(ACTIVE_KEY)
    if not key:
        return None
    try:
        return Intervention.from_json(*shared_store().load_intervention(key))
    except NeurolabError as error:
        st.session_state[ACTIVE_KEY] = None
        st.sidebar.error(f"The active ablation could not be reloaded and was turned off: {error}")
        return None


def _turn_off() -> None:
    st.session_state[ACTIVE_KEY] = None
    st.session_state["ablation_on"] = False


def _active_banner() -> None:
    """Every page says when an ablation is active, and can turn it off."""
    active = active_intervention()
    if active is not None:
        st.sidebar.warning(f"Ablation active: {active.describe()} (`{active.key}`). Predictions on every page are "
                           "under it.")
        st.sidebar.button("Turn the ablation off", key="turn_off_ablation", on_click=_turn_off)


def open_view(views: tuple[str, ...], key: str) -> tuple[str, DeltaGenerator]:
    """Tabs of which only the open one is computed and drawn (``st.tabs(on_change="rerun")``; the open tab kept in
    ``key``): returns its name and its container. A page's change then redraws one view's charts, not all of them."""
    st.session_state.setdefault(key, views[0])
    tabs = st.tabs(list(views), key=key, on_change="rerun")
    index = next((i for i, tab in enumerate(tabs) if tab.open), 0)
    return views[index], tabs[index]


def pick_neuron(label: str) -> None:
    """Add a neuron (``L3N12``) to the Ablation Lab's picks."""
    picks = st.session_state.setdefault(PICKS_KEY, [])
    if label not in picks:
        picks.append(label)


@contextmanager
def progress_bar(label: str, unit: str = "") -> Iterator[Progress]:
    """An ``st.progress`` bar for the core's ``progress(done, total, stage)``, removed when the block ends. Its text
    is the stage and count, or ``label`` and the count in ``unit`` while the computation names no stage."""
    bar = st.progress(0.0, text=label)

    def update(done: float, total: float, stage: str) -> None:
        fraction = min(1.0, max(0.0, done / total)) if total > 0 else 1.0
        count = f"{done:,.0f}/{total:,.0f}"
        bar.progress(fraction, text=f"{stage}: {count}" if stage else f"{label}: {count} {unit}".rstrip())

    try:
        yield update
    finally:
        bar.empty()


@st.cache_resource
def shared_store() -> Store:
    """The one store of this server process (``$NEUROLAB_STORE`` or the user cache), shared by every session."""
    return Store()


@st.cache_data(max_entries=64, show_spinner=False)
def most_active_neurons(store_path: str, sweep_id: int, layer: int, n_stored: int) -> pd.DataFrame:
    """The layer's most varying stored neurons: an aggregate over the layer's stored values, computed once per
    (layer, number of stored neurons) instead of on every rerun."""
    return most_active(shared_store(), sweep_id, layer)
