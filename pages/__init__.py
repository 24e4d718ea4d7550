"""Widgets every page shares (Streamlit skips ``__init__.py`` when it lists pages).

Pages lay out widgets and call :mod:`neurolab`; they hold no analysis code and never trace a model.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from neurolab.analysis.neuron_maps import most_active
from neurolab.errors import NeurolabError
from neurolab.models.loading import LoadedModel, load_model
from neurolab.store.connection import Store

MODEL_KEY = "model_name"  # the one source of truth for the chosen model, shared by every page


def _remember_model() -> None:
    st.session_state[MODEL_KEY] = st.session_state["_model_input"].strip() or "embedded"


def model_sidebar() -> LoadedModel:
    """The sidebar model picker; returns the loaded model or stops the page with a clear message."""
    st.session_state.setdefault(MODEL_KEY, "embedded")
    st.sidebar.text_input(
        "Model", value=st.session_state[MODEL_KEY], key="_model_input", on_change=_remember_model,
        help="'embedded' is neurolab's own arithmetic model. Or a Hugging Face id (e.g. EleutherAI/pythia-70m, "
        "from the local cache when offline) or a local folder with safetensors weights.",
    )
    name = st.session_state[MODEL_KEY]
    try:
        with st.spinner(f"Loading {name} ..."):
            model = load_model(name)
    except NeurolabError as error:
        st.error(f"Could not load the model: {error}")
        st.info("Type 'embedded' to go back to the shipped model.")
        st.stop()
    st.sidebar.caption(
        f"{model.adapter.family} · {model.n_layers} layers × {model.d_mlp} neurons · "
        f"numbers 0..{model.max_single_token} single-token · fingerprint `{model.fingerprint}`"
    )
    return model


@st.cache_resource
def shared_store() -> Store:
    """The one store of this server process (``$NEUROLAB_STORE`` or the user cache), shared by every session."""
    return Store()


@st.cache_data(max_entries=64, show_spinner=False)
def most_active_neurons(store_path: str, sweep_id: int, layer: int) -> pd.DataFrame:
    """The layer's most varying neurons: an aggregate over the whole layer (a second on a 300x300 grid), so it is
    computed once per complete layer, whose values never change, instead of on every rerun."""
    return most_active(shared_store(), sweep_id, layer)
