"""Shared fixtures: the shipped embedded model, and tiny random-weight models of every supported family.

The tiny models are built here (no hub), saved as safetensors folders and loaded through ``load_model`` — the same
code path as a hub model.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest

from neurolab.models.loading import LoadedModel, load_model

from .tiny_models import FAMILY_CONFIGS, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: save_tiny_model(root / family, family) for family in FAMILY_CONFIGS}


@pytest.fixture(scope="session", params=sorted(FAMILY_CONFIGS))
def tiny_model(request, tiny_model_dirs) -> LoadedModel:
    return load_model(str(tiny_model_dirs[request.param]))


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    return load_model("embedded")


@pytest.fixture(scope="module")
def pages_store(tmp_path_factory):
    """A module's pages share a fresh store file, never the user's (``shared_store`` is a cached resource)."""
    import streamlit as st

    mp = pytest.MonkeyPatch()
    mp.setenv("NEUROLAB_STORE", str(tmp_path_factory.mktemp("pages") / "store.duckdb"))
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()
    mp.undo()
