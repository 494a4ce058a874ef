"""Damaged checkpoint files: checksums, truncated and empty files, stale temp files, a full disk."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import neuralode.training.checkpoint as checkpoint_module
from neuralode.training import (
    CheckpointCorruptError,
    CheckpointWriteError,
    Trainer,
    TrainerConfig,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)

CHECKPOINT = "checkpoint.pt"
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 1472 vs 1366"


def _trainer(run_dir: Path, epochs: int = 1) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(64, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    return Trainer(
        model, optimizer, lambda epoch: [x], lambda m, b: ((m(b) ** 2).mean(), {}), lambda m: {},
        TrainerConfig(epochs=epochs, batches_per_epoch=1, progress=False, tensorboard=False),
        run_dir=run_dir, device=torch.device("cpu"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A checkpoint file written by the Trainer after one epoch, and the weights it holds."""
    run_dir = tmp_path_factory.mktemp("trained")
    trainer = _trainer(run_dir)
    trainer.fit()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return (run_dir / CHECKPOINT).read_bytes(), weights


def _resume(run_dir: Path, data: bytes) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT).write_bytes(data)
    return _trainer(run_dir)


def _tensor_span(data: bytes, tensor: torch.Tensor) -> tuple[int, int]:
    raw = tensor.numpy().tobytes()
    start = data.find(raw)
    assert start > 0, "the tensor's bytes are stored verbatim in the zip archive"
    return start, start + len(raw)


def test_a_good_checkpoint_resumes_with_its_weights(tmp_path, trained):
    data, weights = trained
    trainer = _resume(tmp_path, data)
    assert trainer.resumed_from == 1
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())


def test_zeroed_bytes_inside_a_tensor_are_detected(tmp_path, trained):
    data, weights = trained
    start, _ = _tensor_span(data, weights["weight"])
    damaged = data[:start] + bytes(64) + data[start + 64 :]
    with pytest.raises(CheckpointCorruptError, match="SHA-256") as info:
        _resume(tmp_path, damaged)
    message = str(info.value)
    assert str(tmp_path / CHECKPOINT) in message and "delete it or move it aside" in message
    assert info.value.path == tmp_path / CHECKPOINT


@settings(max_examples=60)
@given(offset=st.floats(0.0, 1.0, exclude_max=True), length=st.integers(1, 64), byte=st.integers(0, 255))
def test_any_damage_inside_the_weights_is_refused_or_harmless(
    tmp_path_factory, trained, offset, length, byte
):
    """Overwriting bytes anywhere in the weight tensor's storage: the load refuses, or the values did
    not change (the new bytes equalled the old). Never a silent resume with other weights."""
    data, weights = trained
    start, end = _tensor_span(data, weights["weight"])
    at = start + int(offset * (end - start))
    damaged = data[:at] + bytes([byte]) * length + data[at + length :]
    path = tmp_path_factory.mktemp("damaged") / CHECKPOINT
    path.write_bytes(damaged)
    try:
        state = load_checkpoint(path)
    except CheckpointCorruptError:
        assert damaged != data
        return
    assert damaged == data or torch.equal(state["model"]["weight"], weights["weight"])


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_checkpoint_raises_a_typed_error_naming_the_file(tmp_path, trained, keep):
    data, _ = trained
    cut = data[: int(len(data) * keep)]
    with pytest.raises(CheckpointCorruptError) as info:
        _resume(tmp_path, cut)
    assert str(tmp_path / CHECKPOINT) in str(info.value)
    assert "run the same command again" in str(info.value)
    if keep == 0.0:
        assert "empty" in str(info.value)


def test_a_pickle_payload_in_a_checkpoint_is_refused_unexecuted(tmp_path):
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    torch.save({"model": Payload()}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointCorruptError, match="objects other than tensors"):
        load_checkpoint(tmp_path / CHECKPOINT)
    assert not ran.exists()


def test_a_checkpoint_written_before_checksums_still_resumes(tmp_path, trained):
    """The old format: the Trainer's state dict torch.save'd as it is, no checksum entry."""
    data, weights = trained
    source = tmp_path / "new" / CHECKPOINT
    source.parent.mkdir()
    source.write_bytes(data)
    state = torch.load(source, weights_only=True)
    del state["checksum"]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / CHECKPOINT)  # what save_checkpoint wrote before this change
    trainer = _trainer(old)
    assert trainer.resumed_from == 1
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())


def test_the_checksum_is_stored_and_stripped_on_load(tmp_path):
    state = {"a": torch.arange(5.0), "b": [1, (2.5, "x")], "c": {"d": None, 3: True}}
    save_checkpoint(tmp_path / CHECKPOINT, state)
    raw = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert len(raw["checksum"]["sha256"]) == 64
    loaded = load_checkpoint(tmp_path / CHECKPOINT)
    assert set(loaded) == {"a", "b", "c"} and torch.equal(loaded["a"], state["a"])


def test_a_changed_plain_value_fails_the_checksum(tmp_path):
    """Damage outside the tensors (the pickled epoch number) is caught too."""
    save_checkpoint(tmp_path / CHECKPOINT, {"epoch": 7, "w": torch.ones(3)})
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state["epoch"] = 8
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointCorruptError, match="SHA-256"):
        load_checkpoint(tmp_path / CHECKPOINT)


def test_stale_temp_files_are_removed_at_resume_and_at_save(tmp_path, trained):
    data, _ = trained
    stale = tmp_path / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(data[:100])
    other = tmp_path / ".result.json.x.tmp"  # another file's temp: not the checkpoint's, left alone
    other.write_text("{")
    trainer = _resume(tmp_path, data)
    assert not stale.exists() and other.exists()
    stale.write_bytes(data[:100])
    trainer._checkpoint()
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.glob(".checkpoint.pt.*.tmp")) == []


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (RuntimeError(TORCH_FULL_DISK), "the disk is probably full"),
        (OSError(errno.EIO, "Input/output error"), "the write failed"),
    ],
)
def test_a_failed_write_names_the_path_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, error, says):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    good = path.read_bytes()

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise error

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    message = str(info.value)
    assert says in message and str(path) in message and "kept" in message
    if isinstance(error, OSError):
        assert info.value.errno == error.errno and error.strerror in message
    else:
        assert "unexpected pos" in message
    assert isinstance(info.value.__cause__, type(error))
    assert path.read_bytes() == good
    assert list(tmp_path.glob("*.tmp")) == []
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_a_full_disk_on_other_atomic_writes_is_reported_alike(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match="the disk is full"):
        atomic_write_json(tmp_path / "result.json", {"a": 1})
    assert not (tmp_path / "result.json").exists()


def test_other_errors_while_writing_pass_through_unchanged(tmp_path, monkeypatch):
    def bad(*args, **kwargs):
        raise pickle.PicklingError("cannot pickle a lambda")

    monkeypatch.setattr(checkpoint_module.torch, "save", bad)
    with pytest.raises(pickle.PicklingError):
        save_checkpoint(tmp_path / CHECKPOINT, {"w": torch.ones(1)})
