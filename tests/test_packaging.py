"""The package as a user installs it: the wheel and sdist build, the wheel installs into a fresh
environment that has only torch and numpy and solves a problem there, and the metadata says what the
library needs (torch and numpy) apart from what the experiments, the benchmark and the tests need."""

from __future__ import annotations

import re
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

import neuralode
from scripts.package_check import ROOT, build, check_wheel, requirement_closure


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    return build(tmp_path_factory.mktemp("dist"))


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_wheel_installs_and_solves_in_a_torch_only_environment(dists, tmp_path):
    wheel, _ = dists
    out = check_wheel(wheel, tmp_path / "env")
    assert "y(1) = 2.718282" in out


def test_metadata_requires_only_torch_and_numpy(dists):
    wheel, _ = dists
    meta = _metadata(wheel)
    assert meta["Version"] == neuralode.__version__
    assert meta["License-Expression"] == "MIT"
    unconditional = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in unconditional) == ["numpy", "torch"]
    assert set(meta.get_all("Provides-Extra")) >= {"experiments", "bench", "docs", "test"}
    assert any(c.startswith("Intended Audience :: Science/Research") for c in meta.get_all("Classifier"))


def test_sdist_carries_what_a_build_needs(dists):
    _, sdist = dists
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "LICENSE", "neuralode/__init__.py", "neuralode/solve.py"} <= names


def test_versions_agree_and_citation_and_changelog_exist():
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert version is not None and version.group(1) == neuralode.__version__ == citation["version"]
    assert citation["preferred-citation"]["title"] == "Neural Ordinary Differential Equations"
    assert f"## [{neuralode.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_requirement_closure_follows_markers_and_extras():
    closure = requirement_closure(("torch",))
    assert {"torch", "filelock", "typing-extensions"} <= set(closure)
    assert "pyyaml" not in closure  # only torch's "pyyaml" extra asks for it
