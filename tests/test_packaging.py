"""The README's two commands, .ci/run, the Dockerfile and requirements agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read(name: str) -> str:
    return (ROOT / name).read_text()


def test_requirements_pin_everything_and_cpu_torch():
    lines = [l.strip() for l in read("requirements.txt").splitlines() if l.strip() and not l.startswith("#")]
    assert "torch==2.13.0" in lines
    assert all("==" in l for l in lines), "every requirement is pinned"
    names = {l.split("==")[0].lower() for l in lines}
    assert {"streamlit", "plotly", "transformers", "nnsight", "duckdb", "kaleido"} <= names
    assert any(l.startswith("nnsight==0.8.") for l in lines)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = read("README.md")
    commands = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert commands[0].strip() == "make run" and commands[1].strip() == "make test"
    assert readme.index("make run") < readme.index("##")  # before any section: the opening of the README
    ci = read(".ci/run")
    assert "make test" in ci
    makefile = read("Makefile")
    assert re.search(r"^run: .*\n\t.*streamlit run app\.py --server\.address 127\.0\.0\.1 --server\.port \$\(PORT\)",
                     makefile, re.M)
    assert "PORT ?= 8501" in makefile
    assert re.search(r"^test: .*\n\t.*-m pytest", makefile, re.M)


def test_dockerfile_runs_the_same_app_with_the_same_requirements():
    docker = read("Dockerfile")
    assert docker.startswith("#") and "FROM python:3.11-slim" in docker
    assert "COPY requirements.txt" in docker and "pip install -r requirements.txt" in docker
    assert re.search(r'CMD \["streamlit", "run", "app.py".*"--server.port", "8501"\]', docker)
    assert "EXPOSE 8501" in docker
    assert re.search(r"HEALTHCHECK.*\n.*/_stcore/health", docker)
    user = re.findall(r"^USER (\S+)", docker, re.M)
    assert user and user[-1] not in ("root", "0")
    assert docker.index("USER") < docker.index("CMD")
    assert (ROOT / "app.py").exists()


def test_core_never_imports_streamlit():
    for path in (ROOT / "neurolab").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path


def test_traces_live_in_the_core_only():
    for path in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")]:
        assert ".trace(" not in path.read_text(), path
