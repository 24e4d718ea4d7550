"""Where things live on disk, resolved once so no module hard-codes a path."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
MODELS_DIR = DATA_DIR / "models"

#: The model the project trains and ships; ``embedded`` (or no model at all) names it everywhere.
EMBEDDED_MODEL_NAME = "neurolab-arith"
EMBEDDED_ALIASES = ("", "embedded", EMBEDDED_MODEL_NAME)


def embedded_model_dir() -> Path:
    return MODELS_DIR / EMBEDDED_MODEL_NAME


def train_state_dir() -> Path:
    """Resumable training state (optimizer moments, step): large, local, never committed."""
    return Path(os.environ.get("NEUROLAB_TRAIN_STATE", REPO_ROOT / ".train-state"))
