"""A non-editable install (a built wheel) carries every package and the embedded model, and finds the model from
anywhere; the models folder resolves as neurolab/paths.py says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from neurolab import paths

ROOT = Path(__file__).resolve().parent.parent
DATA_PACKAGE = "neurolab._data.models"


def test_pyproject_lists_every_package_and_the_models():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "neurolab").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {DATA_PACKAGE}
    assert setuptools["package-dir"] == {DATA_PACKAGE: "data/models"}
    assert setuptools["package-data"] == {DATA_PACKAGE: ["**/*"]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built (offline, from a copy of the sources) and installed into a plain folder."""
    pytest.importorskip("setuptools", reason="the wheel is built with the venv's setuptools (requirements-dev.txt)")
    tmp = tmp_path_factory.mktemp("install")
    source, wheels, target = tmp / "source", tmp / "wheels", tmp / "target"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "neurolab", source / "neurolab", ignore=ignore)
    shutil.copytree(ROOT / "data" / "models", source / "data" / "models", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", wheels, source],
                   check=True, capture_output=True, cwd=tmp)
    wheel = next(wheels.glob("neurolab-*.whl"))
    subprocess.run([*pip, "install", "--no-index", "--no-deps", "--target", target, wheel],
                   check=True, capture_output=True, cwd=tmp)
    return target


def test_an_installed_copy_finds_its_model_from_anywhere(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (paths.MODELS_ENV, "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed)
    script = (
        "import json, neurolab, neurolab.cli\n"
        "from neurolab import paths\n"
        "print(json.dumps({'package': neurolab.__file__, 'checkout': paths.in_checkout(),"
        " 'models': str(paths.MODELS_DIR), 'embedded': str(paths.embedded_model_dir())}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(installed)  # the installed copy, not this checkout
    assert not found["checkout"]
    embedded = Path(found["embedded"])
    assert embedded == installed / "neurolab" / "_data" / "models" / paths.EMBEDDED_MODEL_NAME
    assert Path(found["models"]) == embedded.parent
    assert (embedded / "config.json").is_file() and (embedded / "model.safetensors").is_file()
    checkout = ROOT / "data" / "models" / paths.EMBEDDED_MODEL_NAME
    shipped = {p.relative_to(checkout) for p in checkout.rglob("*") if p.is_file()}
    assert shipped == {p.relative_to(embedded) for p in embedded.rglob("*") if p.is_file()}  # checkpoints included


def test_models_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.MODELS_ENV, raising=False)
    assert paths.in_checkout() and paths.models_dir() == ROOT / "data" / "models" == paths.MODELS_DIR
    assert paths.embedded_model_dir() == ROOT / "data" / "models" / paths.EMBEDDED_MODEL_NAME

    monkeypatch.setenv(paths.MODELS_ENV, str(tmp_path / "elsewhere"))
    assert paths.models_dir() == tmp_path / "elsewhere"
    assert paths.embedded_model_dir() == tmp_path / "elsewhere" / paths.EMBEDDED_MODEL_NAME

    fake = tmp_path / "site-packages"  # a folder holding the package but no checkout
    (fake / "neurolab").mkdir(parents=True)
    assert not paths.in_checkout(fake)
    (fake / "pyproject.toml").touch()
    (fake / "data" / "models").mkdir(parents=True)
    assert paths.in_checkout(fake)
