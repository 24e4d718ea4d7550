"""Where things live on disk, resolved once so no module hard-codes a path.

The models folder (``MODELS_DIR``, holding the embedded model) is, in this order:

1. ``$NEUROLAB_MODELS_DIR`` when set;
2. the checkout's ``data/models/`` when the package sits in a checkout (running from the repository, or an
   editable install);
3. the copy installed with the package (``neurolab/_data/models/``, package data of a non-editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS_ENV = "NEUROLAB_MODELS_DIR"

PACKAGE_DIR = Path(__file__).resolve().parent
#: The checkout holding the package (its parent folder); only meaningful when :func:`in_checkout` is true.
REPO_ROOT = PACKAGE_DIR.parent
#: Where the installed copy of the models lives (see ``[tool.setuptools.package-dir]`` in pyproject.toml).
INSTALLED_DATA_DIR = PACKAGE_DIR / "_data"


def in_checkout(root: Path = REPO_ROOT) -> bool:
    """True when the package runs from a source checkout (its parent holds pyproject.toml and data/models/)."""
    return (root / "pyproject.toml").is_file() and (root / "data" / "models").is_dir()


def data_dir() -> Path:
    """The checkout's ``data/`` when running from one, else the data installed with the package."""
    return REPO_ROOT / "data" if in_checkout() else INSTALLED_DATA_DIR


def models_dir() -> Path:
    """The models folder, resolved now (``$NEUROLAB_MODELS_DIR``, else the checkout's, else the installed copy)."""
    override = os.environ.get(MODELS_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return data_dir() / "models"


DATA_DIR = data_dir()
MODELS_DIR = models_dir()

#: The model the project trains and ships; ``embedded`` (or no model at all) names it everywhere.
EMBEDDED_MODEL_NAME = "neurolab-arith"
EMBEDDED_ALIASES = ("", "embedded", EMBEDDED_MODEL_NAME)


def embedded_model_dir() -> Path:
    return models_dir() / EMBEDDED_MODEL_NAME


def train_state_dir() -> Path:
    """Resumable training state (optimizer moments, step): large, local, never committed.

    ``$NEUROLAB_TRAIN_STATE``, else ``.train-state/`` of the checkout, else of the working directory (never inside an
    installed package)."""
    default = REPO_ROOT / ".train-state" if in_checkout() else Path.cwd() / ".train-state"
    return Path(os.environ.get("NEUROLAB_TRAIN_STATE", default))
