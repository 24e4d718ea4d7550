"""The README's two commands, .ci/run, the Makefile, the Dockerfile, requirements and pyproject agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent

#: Runtime requirements the project uses through another package rather than by importing them.
USED_INDIRECTLY = {"accelerate": "transformers' device_map='auto' (multi-GPU loading)"}
#: Distribution name -> import name, where they differ.
IMPORT_NAMES: dict[str, str] = {}
TEST_TOOLS = {"pytest", "ruff", "setuptools", "playwright"}


def read(name: str) -> str:
    return (ROOT / name).read_text()


def pins(name: str) -> dict[str, str]:
    """A requirements file's pins: canonical name -> version; every line must be an exact pin."""
    out = {}
    for line in read(name).splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name}: {line} is not an exact pin"
        out[canonicalize_name(requirement.name)] = specs[0].version
    return out


def pyproject() -> dict:
    return tomllib.loads(read("pyproject.toml"))


def project_requirements(key: str | None = None) -> dict[str, Requirement]:
    project = pyproject()["project"]
    lines = project["dependencies"] if key is None else project["optional-dependencies"][key]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def sources() -> list[Path]:
    """The project's own code (tests and benchmarks apart)."""
    return [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "neurolab").rglob("*.py")]


def test_requirements_pin_everything_and_cpu_torch():
    runtime = pins("requirements.txt")
    assert runtime["torch"] == "2.13.0"
    assert runtime["nnsight"].startswith("0.8.")
    assert {"streamlit", "plotly", "transformers", "nnsight", "duckdb", "accelerate"} <= set(runtime)


def test_requirements_and_pyproject_list_the_same_runtime_dependencies():
    runtime, declared = pins("requirements.txt"), project_requirements()
    assert set(runtime) == set(declared)
    for name, requirement in declared.items():
        assert requirement.specifier.contains(runtime[name]), f"{name}=={runtime[name]} breaks {requirement}"


def test_nothing_unused_is_pinned():
    runtime = pins("requirements.txt")
    code = "\n".join(path.read_text() for path in sources())
    for name in set(runtime) - set(USED_INDIRECTLY):
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from)\s+{module}\b", code, re.M), f"{name} is pinned but never imported"


def test_test_tools_live_apart():
    runtime, dev, extra = pins("requirements.txt"), pins("requirements-dev.txt"), project_requirements("test")
    assert set(dev) == set(extra) == TEST_TOOLS
    assert not TEST_TOOLS & set(runtime)
    assert not TEST_TOOLS & set(project_requirements())
    for name, requirement in extra.items():
        assert requirement.specifier.contains(dev[name]), f"{name}=={dev[name]} breaks pyproject's {requirement}"
    for path in sources():
        assert not re.search(r"^\s*(import|from)\s+pytest\b", path.read_text(), re.M), path


def test_ruff_config_is_explicit():
    ruff = pyproject()["tool"]["ruff"]
    assert ruff["line-length"] == 120 and ruff["target-version"] == "py311"
    assert {"E", "F", "W", "I", "B", "UP"} <= set(ruff["lint"]["select"])
    assert ".venv" in ruff.get("exclude", []) + ruff.get("extend-exclude", [])


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = read("README.md")
    commands = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert commands[0].strip() == "make run" and commands[1].strip() == "make test"
    assert readme.index("make run") < readme.index("##")  # before any section: the opening of the README
    assert re.search(r"^make test$", read(".ci/run"), re.M)
    makefile = read("Makefile")
    assert re.search(r"^run: .*\n\t.*python app\.py --server\.address 127\.0\.0\.1 --server\.port \$\(PORT\)",
                     makefile, re.M)
    assert "PORT ?= 8501" in makefile


def rule(makefile: str, target: str) -> tuple[str, list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n?)*)", makefile, re.M)
    assert match, f"no rule for {target}"
    return match[1], [line.strip() for line in match[2].splitlines()]


def test_make_install_installs_the_requirements_and_the_project():
    makefile = read("Makefile")
    prerequisites, recipe = rule(makefile, "$(STAMP)")
    assert set(prerequisites.split()) == {"requirements.txt", "requirements-dev.txt", "pyproject.toml"}
    install = [line for line in recipe if "pip install" in line]
    assert any("-r requirements.txt" in line and "-r requirements-dev.txt" in line for line in install)
    assert re.search(r"pip install .*--no-deps -e \.$", install[-1]), "the project, editable, last"
    assert recipe[-1] == "touch $(STAMP)"
    for target in ("install", "run", "test", "bench"):
        assert "$(STAMP)" in rule(makefile, target)[0]


def test_make_test_runs_ruff_then_pytest_and_make_bench_runs_every_benchmark():
    makefile = read("Makefile")
    recipe = rule(makefile, "test")[1]
    assert len(recipe) == 2 and "ruff check" in recipe[0] and "-m pytest" in recipe[1]
    assert "BENCHMARKS := $(sort $(wildcard benchmarks/bench_*.py))" in makefile
    bench = " ".join(rule(makefile, "bench")[1])
    assert "$(BENCHMARKS)" in bench and "$(VENV)/bin/python" in bench
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)[1].split()
    assert "bench" in phony and "test" in phony
    assert all(re.search(rf"^{re.escape(target)}:", makefile, re.M) for target in phony), "a phony target has no rule"
    assert list((ROOT / "benchmarks").glob("bench_*.py"))


def test_dockerfile_runs_the_same_app_with_the_same_requirements():
    docker = read("Dockerfile")
    assert docker.startswith("#") and "FROM python:3.11-slim" in docker
    assert "COPY requirements.txt" in docker and "pip install -r requirements.txt" in docker
    assert "-r requirements-dev.txt" not in docker  # test tools stay out of the image
    install = re.search(r"^RUN pip install --no-deps \. ", docker, re.M)
    assert install and docker.index("COPY --chown") < install.start() < docker.index("USER")
    assert re.search(r'CMD \["python", "app.py".*"--server.port", "8501"\]', docker)
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
