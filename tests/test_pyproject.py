"""`requires-python` in pyproject.toml tells the truth (issue 26): the lowest Python it admits can install
every pinned dependency (their own Requires-Python, from the installed metadata) and has every
standard-library module the project imports."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NEW_STDLIB = {"tomllib": "3.11", "wsgiref.types": "3.11"}  # standard-library modules newer than Python 3.10


def _lowest_admitted() -> Version:
    spec = SpecifierSet(PROJECT["requires-python"])
    lowest = next((Version(f"3.{minor}") for minor in range(8, 20) if Version(f"3.{minor}.99") in spec), None)
    assert lowest is not None, PROJECT["requires-python"]
    return lowest


def test_the_lowest_admitted_python_installs_every_pinned_dependency() -> None:
    lowest = _lowest_admitted()
    pins = [Requirement(r) for r in PROJECT["dependencies"] + sum(PROJECT["optional-dependencies"].values(), [])]
    checked = []
    for req in pins:
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        if not pinned and req.specifier and Version(installed) in req.specifier:
            pinned = [installed]  # a range (transformers, fastapi): the release installed from it
        if not pinned or Version(installed).public != Version(pinned[0]).public:
            continue  # metadata of another release than the pin says nothing about the pin
        needs = metadata.metadata(req.name).get("Requires-Python")
        checked.append(req.name)
        assert not needs or Version(f"{lowest}.0") in SpecifierSet(needs), \
            f"{req.name}=={pinned[0]} requires Python {needs}; pyproject admits {lowest}"
    assert "torch" in checked and "transformers" in checked  # the check ran on the main pins


def test_the_lowest_admitted_python_has_the_standard_library_the_project_imports() -> None:
    lowest = _lowest_admitted()
    sources = []
    for folder, dirs, files in os.walk(ROOT):  # the project's files, not a virtual environment inside it
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__")]
        sources += [Path(folder) / f for f in files if f.endswith(".py")]
    assert ROOT / "interp" / "__init__.py" in sources
    for path in sources:
        for module in re.findall(r"^\s*(?:import|from)\s+([\w.]+)", path.read_text(encoding="utf-8"), re.M):
            if module in NEW_STDLIB:
                assert lowest >= Version(NEW_STDLIB[module]), \
                    f"{path.relative_to(ROOT)} imports {module} (Python {NEW_STDLIB[module]}+); pyproject admits {lowest}"


def test_the_ranges_admit_both_environments() -> None:
    """transformers and fastapi are ranges so that `.venv` and `.venv-vllm` (vLLM needs transformers < 5.20)
    install the same package; each environment's releases are inside them."""
    import subprocess

    reqs = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["serve"]}
    envs = {"main": None}
    vllm_py = ROOT / ".venv-vllm" / "bin" / "python"
    if vllm_py.exists():
        envs["vllm"] = vllm_py
    for name in ("transformers", "fastapi"):
        assert not any(s.operator == "==" for s in reqs[name].specifier), reqs[name]
        for env, py in envs.items():
            if py is None:
                version = metadata.version(name)
            else:
                version = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                                         capture_output=True, text=True, check=True).stdout.strip()
            assert Version(version) in reqs[name].specifier, f"{env}: {name} {version} is outside {reqs[name]}"


def test_the_makefile_builds_the_llama_cpp_the_llamacpp_extra_pins() -> None:
    pinned = PROJECT["optional-dependencies"]["llamacpp"]
    built = re.search(r"^LLAMACPP := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert built is not None and pinned == [built[1]]
