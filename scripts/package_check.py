"""Build neuralode's wheel and sdist, install the wheel into a fresh virtual environment that has only
torch and numpy (the library's two requirements), and solve one problem there.

The fresh environment gets torch without a multi-GB reinstall: its site-packages links to the files of
the distributions that torch and numpy need (their requirement closure, read from this environment's
metadata), and nothing else, so an import of Hydra, TensorBoard, matplotlib or SciPy by the library
fails there as it would for a user who ran ``pip install neuralode``.

    python -m scripts.package_check [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# what a source tree for the package needs (tests, configs and experiments are not part of the library)
SOURCE_ITEMS = ("neuralode", "pyproject.toml", "README.md", "LICENSE")
# what the library must not need (they are the experiments' and the benchmark's)
NOT_NEEDED = (
    "hydra",
    "omegaconf",
    "tensorboard",
    "matplotlib",
    "scipy",
    "torchvision",
    "torchdiffeq",
    "torchode",
)

SOLVE_ONE_PROBLEM = f"""
import importlib.util, math, sys
import torch, neuralode
assert neuralode.__file__.startswith(sys.prefix), neuralode.__file__
missing = [m for m in {NOT_NEEDED!r} if importlib.util.find_spec(m) is not None]
assert not missing, f"the fresh environment has {{missing}}: it is not torch-only"
y0 = torch.tensor([1.0], requires_grad=True)
t = torch.tensor([0.0, 1.0])
ys = neuralode.odeint_adjoint(lambda t, y: y, y0, t, rtol=1e-8, atol=1e-8, adjoint_params=())
ys[-1].sum().backward()
assert abs(ys[-1].item() - math.e) < 1e-6 and abs(y0.grad.item() - math.e) < 1e-5
import importlib, pkgutil
failed = {{}}
for info in pkgutil.walk_packages(neuralode.__path__, "neuralode."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed[info.name] = str(exc)
assert not failed, f"modules that need more than torch and numpy: {{failed}}"
value = round(ys[-1].item(), 6)
print("solved in a torch-only environment: y(1) =", value, "neuralode", neuralode.__version__)
"""


def requirement_closure(roots: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``roots`` need, transitively (markers evaluated here, extras
    requested by a requirement followed)."""
    found: dict[str, metadata.Distribution] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    stack: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in roots]
    while stack:
        name, extras = stack.pop()
        if (canonicalize_name(name), extras) in visited:
            continue
        visited.add((canonicalize_name(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (a dependency for another platform or Python)
        found[canonicalize_name(name)] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras})
            if wanted:
                stack.append((req.name, frozenset(req.extras)))
    return found


def link_distributions(dists: dict[str, metadata.Distribution], site_packages: Path) -> int:
    """Symlink each distribution's top-level files and folders (and its .dist-info) into
    ``site_packages``; returns how many entries were linked."""
    linked = 0
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            source, target = base / top, site_packages / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
                linked += 1
    return linked


def build(out_dir: Path) -> tuple[Path, Path]:
    """``python -m build`` (sdist, then the wheel from the sdist) from a copy of the package's sources."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for item in SOURCE_ITEMS:
            path = ROOT / item
            if path.is_dir():
                shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, src / item)
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out_dir), str(src)],
            check=True,
            capture_output=True,
            text=True,
        )
    wheel = next(out_dir.glob("neuralode-*.whl"))
    sdist = next(out_dir.glob("neuralode-*.tar.gz"))
    return wheel, sdist


def check_wheel(wheel: Path, env_dir: Path) -> str:
    """Install ``wheel`` into a new torch-only environment at ``env_dir``, check its requirements are
    met (``pip check``) and solve one problem there; returns what the solve printed."""
    venv.EnvBuilder(with_pip=True, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    link_distributions(requirement_closure(("torch", "numpy")), site)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "install", "--no-index", "--no-deps", "--quiet", str(wheel)], check=True)
    subprocess.run([*pip, "check"], check=True, capture_output=True, text=True)
    result = subprocess.run(
        [str(python), "-c", SOLVE_ONE_PROBLEM], capture_output=True, text=True, cwd=env_dir
    )
    if result.returncode != 0:
        raise RuntimeError(f"the solve in the torch-only environment failed:\n{result.stderr}")
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", default=str(ROOT / "dist"), help="where the wheel and sdist go")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("neuralode-*"):
        old.unlink()
    wheel, sdist = build(out_dir)
    sizes = ", ".join(f"{p.name} ({p.stat().st_size / 1024:.0f} KiB)" for p in (wheel, sdist))
    print(f"built {sizes}")
    with tempfile.TemporaryDirectory() as tmp:
        print(check_wheel(wheel, Path(tmp) / "env"))


if __name__ == "__main__":
    main()
