"""Issue 15's acceptance: programs written for torchdiffeq run with ``import torchdiffeq`` resolving to
neuralode (the shim in tests/torchdiffeq_programs/shim first on PYTHONPATH), each in its own process.

Two layers. The call patterns (tests/torchdiffeq_programs/patterns.py, our own code) make the calls each
program makes; they always run, once through the shim and once through the real torchdiffeq as the
oracle. The real programs run when a copy of them is in tests/torchdiffeq_programs/external/ (not in
git; see the README there) and are skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "torchdiffeq_programs"
SHIM = HERE / "shim"
EXTERNAL = Path(os.environ.get("NEURALODE_TORCHDIFFEQ_PROGRAMS", HERE / "external"))
MARKER = "NEURALODE_SHIM torchdiffeq -> "
FLOAT = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)

PATTERN_NAMES = [
    "ode_demo",
    "odenet_mnist",
    "cnf",
    "latent_ode_example",
    "bouncing_ball",
    "learn_physics",
    "ffjord_cnf",
    "ffjord_cnf_regularized",
    "latent_ode_repo_dopri5",
    "latent_ode_repo_euler",
]


def run_python(
    args: list[str],
    cwd: Path,
    shim: bool = True,
    extra_path: tuple[Path, ...] = (),
    timeout: int = 300,
    bin_dirs: tuple[Path, ...] = (),
):
    """Run python with the shim (or the real torchdiffeq) and this checkout's neuralode importable."""
    env = dict(os.environ, MPLBACKEND="Agg", NEURALODE_SHIM_MARKER="1", OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([*map(str, bin_dirs), env.get("PATH", "")])
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = ([str(SHIM)] if shim else []) + [str(ROOT), *map(str, extra_path), *inherited]
    env["PYTHONPATH"] = os.pathsep.join(path)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    proc.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    return proc


def assert_used_neuralode(proc) -> None:
    """The shim prints where neuralode came from when it is imported: it must be this checkout's."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(MARKER)]
    assert lines, f"the shim was not imported (real torchdiffeq used?)\n{proc.stderr[-2000:]}"
    assert lines[0][len(MARKER) :] == str(ROOT / "neuralode" / "__init__.py"), lines[0]


def parse_patterns(stdout: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("PATTERN "):
            _, name, status, rest = [*line.split(" ", 3), ""][:4]
            out[name] = (status, rest)
    return out


@pytest.fixture(scope="module")
def pattern_runs(tmp_path_factory):
    """Every pattern in one process through the shim and one through the real torchdiffeq."""
    script = str(HERE / "patterns.py")
    shim = run_python([script], tmp_path_factory.mktemp("shim"))
    assert shim.returncode == 0, shim.stderr[-4000:]
    assert_used_neuralode(shim)
    oracle = None
    if importlib.util.find_spec("torchdiffeq") is not None:
        oracle = run_python([script], tmp_path_factory.mktemp("oracle"), shim=False)
        assert oracle.returncode == 0, oracle.stderr[-4000:]
        assert "site-packages" in oracle.stdout.splitlines()[0], oracle.stdout.splitlines()[0]
    return parse_patterns(shim.stdout), (parse_patterns(oracle.stdout) if oracle else None), shim.stderr


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_pattern_runs_through_the_shim(pattern_runs, name):
    results, oracle, stderr = pattern_runs
    assert name in results, f"pattern {name} printed nothing\n{stderr[-3000:]}"
    status, value = results[name]
    assert status == "OK", f"{name}: {value}"
    assert math.isfinite(float(value))
    if oracle is not None and oracle.get(name, ("",))[0] == "OK":
        reference = float(oracle[name][1])
        assert math.isclose(float(value), reference, rel_tol=1e-4, abs_tol=1e-5), (value, reference)


# ---- the real programs, when a copy is present --------------------------------------------------------


def _mnist_subset(cwd: Path, n_train: int = 32, n_test: int = 32) -> None:
    """The first images of the real MNIST (data/MNIST/raw) in torchvision's layout under
    .data/mnist, so that download=True finds them and no download happens; fake images without it."""
    raw_dst = cwd / ".data" / "mnist" / "MNIST" / "raw"
    raw_src = ROOT / "data" / "MNIST" / "raw"
    if not (raw_src / "t10k-labels-idx1-ubyte").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from fake_mnist import write_fake_mnist

        write_fake_mnist(cwd / ".data" / "mnist", n_train=n_train, n_test=n_test)
        return
    raw_dst.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, record, header in (("images-idx3-ubyte", 784, 16), ("labels-idx1-ubyte", 1, 8)):
            data = (raw_src / f"{prefix}-{kind}").read_bytes()
            magic = struct.unpack(">I", data[:4])[0]
            subset = struct.pack(">II", magic, n) + data[8:header] + data[header : header + n * record]
            (raw_dst / f"{prefix}-{kind}").write_bytes(subset)


# FFJORD's train_toy.py ends by plotting its trajectory (diagnostics/viz_toy.py) with matplotlib calls
# removed since (matplotlib.cm.get_cmap in 3.9, Axes.set_axis_bgcolor in 2.2), then calls ffmpeg. The
# program stays unchanged: the environment gets those two names back and a no-op ffmpeg.
_MATPLOTLIB_COMPAT = """\
import matplotlib
import matplotlib.axes
import matplotlib.cm

if not hasattr(matplotlib.cm, "get_cmap"):
    matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
if not hasattr(matplotlib.axes.Axes, "set_axis_bgcolor"):
    matplotlib.axes.Axes.set_axis_bgcolor = matplotlib.axes.Axes.set_facecolor
"""


def _ffjord_compat(tmp_path: Path) -> tuple[Path, Path]:
    """A sitecustomize with the old matplotlib names and a bin folder with a no-op ffmpeg."""
    site, bin_dir = tmp_path / "compat_site", tmp_path / "compat_bin"
    site.mkdir()
    bin_dir.mkdir()
    (site / "sitecustomize.py").write_text(_MATPLOTLIB_COMPAT)
    ffmpeg = bin_dir / "ffmpeg"
    ffmpeg.write_text("#!/bin/sh\nexit 0\n")
    ffmpeg.chmod(0o755)
    return site, bin_dir


def _needs(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


EXAMPLES = "torchdiffeq/examples"
# (id, script under EXTERNAL, arguments at toy sizes, modules it needs, regex of a line with a value)
PROGRAMS = [
    (
        "ode_demo",
        f"{EXAMPLES}/ode_demo.py",
        ["--niters", "2", "--test_freq", "1", "--data_size", "100", "--adjoint"],
        (),
        r"Total Loss (\S+)",
    ),
    (
        "odenet_mnist",
        f"{EXAMPLES}/odenet_mnist.py",
        [
            "--nepochs",
            "1",
            "--batch_size",
            "16",
            "--test_batch_size",
            "32",
            "--data_aug",
            "False",
            "--adjoint",
            "True",
            "--tol",
            "1e-1",
        ],
        ("torchvision",),
        r"NFE-F (\S+) \| NFE-B (\S+)",
    ),
    (
        "cnf",
        f"{EXAMPLES}/cnf.py",
        ["--niters", "2", "--num_samples", "64", "--width", "8", "--hidden_dim", "8", "--adjoint"],
        ("sklearn", "PIL"),
        r"running avg loss: (\S+)",
    ),
    (
        "latent_ode",
        f"{EXAMPLES}/latent_ode.py",
        ["--niters", "1", "--adjoint", "True"],
        (),
        r"running avg elbo: (\S+)",
    ),
    ("bouncing_ball", f"{EXAMPLES}/bouncing_ball.py", ["1"], (), r"(Gradient check passed)"),
    ("learn_physics", f"{EXAMPLES}/learn_physics.py", ["--num_iterations", "1"], (), r"^0 (\S+) (\d+)$"),
    (
        "ffjord_train_toy",
        "ffjord/train_toy.py",
        [
            "--niters",
            "2",
            "--batch_size",
            "16",
            "--test_batch_size",
            "16",
            "--viz_freq",
            "1000",
            "--val_freq",
            "1",
            "--log_freq",
            "1",
            "--dims",
            "8-8",
            "--save",
            "experiments",
        ],
        ("sklearn", "six"),
        r"Loss ([^\s(]+)",
    ),
    (
        "latent_ode_run_models",
        "latent_ode/run_models.py",
        [
            "--niters",
            "1",
            "-n",
            "20",
            "-b",
            "10",
            "--latent-ode",
            "--dataset",
            "periodic",
            "-l",
            "3",
            "-u",
            "8",
            "-g",
            "8",
            "--rec-dims",
            "8",
            "-t",
            "20",
            "--noise-weight",
            "0.01",
        ],
        ("sklearn", "pandas", "scipy", "torchvision"),
        r"\| Loss (\S+)",
    ),
]


@pytest.mark.parametrize(
    ("name", "script", "args", "modules", "pattern"), PROGRAMS, ids=[p[0] for p in PROGRAMS]
)
def test_real_program(tmp_path, name, script, args, modules, pattern):
    path = EXTERNAL / script
    if not path.exists():
        pytest.skip(f"no copy of {script} under {EXTERNAL} (see tests/torchdiffeq_programs/README.md)")
    missing = _needs(*modules)
    if missing:
        pytest.skip(f"{name} imports {', '.join(missing)}, not installed here")
    if name == "odenet_mnist":
        _mnist_subset(tmp_path)
    extra_path, bin_dirs = (path.parent,), ()
    if name == "ffjord_train_toy":
        site, bin_dir = _ffjord_compat(tmp_path)
        extra_path, bin_dirs = (path.parent, site), (bin_dir,)
    proc = run_python([str(path), *args], tmp_path, extra_path=extra_path, bin_dirs=bin_dirs)
    print(f"{name}: {proc.seconds:.1f} s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert_used_neuralode(proc)
    found = re.findall(pattern, output, flags=re.MULTILINE)
    assert found, f"{name} printed no line matching {pattern!r}\n{output[-3000:]}"
    for match in found:
        for value in match if isinstance(match, tuple) else (match,):
            if FLOAT.fullmatch(value):
                assert math.isfinite(float(value)), (name, found)
