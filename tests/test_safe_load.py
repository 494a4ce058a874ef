"""No file the project reads runs code: every torch.load is weights_only; a crafted pickle is refused."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("neuralode", "experiments", "scripts", "tests")


def _is_torch_load(call: ast.Call) -> bool:
    """``torch.load(...)`` or a bare ``load(...)`` imported from torch (``from torch import load``)."""
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "load"
        and (isinstance(func.value, ast.Name) and func.value.id == "torch")
    )


def _weights_only_true(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


# git-ignored copies of third-party torchdiffeq programs, run unchanged by tests/test_torchdiffeq_programs.py
NOT_OURS = REPO / "tests" / "torchdiffeq_programs" / "external"


def unsafe_torch_loads(root: Path) -> list[str]:
    """``file:line`` of each ``torch.load`` under ``root``'s scanned folders without ``weights_only=True``."""
    found = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            if NOT_OURS in path.parents:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                       and n.module == "torch" for a in n.names if a.name == "load"}  # fmt: skip
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                bare = isinstance(node.func, ast.Name) and node.func.id in aliases
                if (_is_torch_load(node) or bare) and not _weights_only_true(node):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_torch_load_in_the_project_is_weights_only():
    unsafe = unsafe_torch_loads(REPO)
    assert unsafe == [], "torch.load without weights_only=True (a crafted file could run code): " + ", ".join(
        unsafe
    )


def test_the_scan_finds_unsafe_loads(tmp_path):
    """The scanner itself: it names file:line for each form that is not weights_only=True."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "x.py").write_text(
        "import torch\nfrom torch import load as ld\n"
        "a = torch.load('f')\n"  # line 3
        "b = torch.load('f', weights_only=False)\n"  # 4
        "c = torch.load('f', weights_only=True)\n"
        "d = ld('f')\n"  # 6
        "e = torch.load('f', weights_only=flag)\n"  # 7: not provably True
    )
    assert unsafe_torch_loads(tmp_path) == [
        "scripts/x.py:3",
        "scripts/x.py:4",
        "scripts/x.py:6",
        "scripts/x.py:7",
    ]


def _make_cnf_results():
    spec = importlib.util.spec_from_file_location(
        "make_cnf_results", REPO / "scripts" / "make_cnf_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Payload:
    """What a crafted file carries: unpickling it calls ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_plot_data_file_is_refused_and_not_executed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"final": {}}))
    marker = tmp_path / "code-ran"
    torch.save({"task": "mle", "samples": torch.zeros(2, 2), "x": _Payload(marker)}, run / "plot_data.pt")
    script = _make_cnf_results()
    with pytest.raises(SystemExit) as info:
        script.load(run, "python -m experiments.cnf task=mle")
    message = str(info.value.code)
    assert "plot_data.pt" in message and "refused" in message and "nothing in it was run" in message
    assert "python -m experiments.cnf task=mle" in message
    assert not marker.exists()


def test_a_damaged_plot_data_file_is_refused_with_the_command_to_rewrite_it(tmp_path):
    (tmp_path / "result.json").write_text("{}")
    torch.save({"samples": torch.zeros(64, 2)}, tmp_path / "plot_data.pt")
    data = (tmp_path / "plot_data.pt").read_bytes()
    (tmp_path / "plot_data.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match=r"damaged.*experiments\.cnf"):
        _make_cnf_results().load(tmp_path, "python -m experiments.cnf")


def test_what_experiments_cnf_stores_loads_weights_only(tmp_path):
    """plot_data's contents (strings, numbers, tensors) need no unpickling of code."""
    plot = {"task": "mle", "target": "moons", "flow": "cnf", "size": 8, "limit": 4.0,
            "samples": torch.randn(5, 2), "grid_axis": torch.linspace(-4, 4, 3)}  # fmt: skip
    torch.save(plot, tmp_path / "plot_data.pt")
    (tmp_path / "result.json").write_text("{}")
    _, loaded = _make_cnf_results().load(tmp_path, "cmd")
    assert loaded.keys() == plot.keys() and torch.equal(loaded["samples"], plot["samples"])
