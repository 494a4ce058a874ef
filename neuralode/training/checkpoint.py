"""Atomic writes and verified checkpoints.

A crash mid-write leaves the previous file intact, never a truncated one; a failed write (a full disk)
raises :class:`CheckpointWriteError` naming the path and keeps the previous file. Every checkpoint carries
the SHA-256 of its contents (``state["checksum"]``), checked when it is loaded: a damaged, truncated or
empty file raises :class:`CheckpointCorruptError` naming the file and how to start over, instead of
resuming with wrong weights or surfacing torch's raw reader error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKSUM_KEY = "checksum"
CHECKSUM_FORMAT = 1  # version of the digest below; bump it if _digest changes
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_TORCH_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos")


class CheckpointCorruptError(ValueError):
    """A checkpoint file is empty, truncated, fails its checksum, or holds something other than tensors."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"checkpoint {path} is damaged and cannot be resumed: {reason}. To start this run over, delete "
            f"it or move it aside (mv {path} {path}.damaged) and run the same command again"
        )


class CheckpointWriteError(OSError):
    """Writing a file failed (a full disk, or another OS error); the previous version of the file is kept."""


def refusal_reason(error: BaseException) -> str:
    """The informative line of torch's ``weights_only`` refusal (the global it would not load)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "GLOBAL" in line]
    return (named or lines or [type(error).__name__])[0]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed write of ``path`` left next to it; returns them.

    Call it only where no other process is writing ``path`` (the run's single writer, rank 0).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{_temp_prefix(path)}*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _write_failure(path: Path, error: BaseException) -> CheckpointWriteError | None:
    """The clear error for a failed write, or None when ``error`` is not a write failure."""
    code = error.errno if isinstance(error, OSError) else None
    torch_writer = isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_WRITER_FAILURES)
    if not (isinstance(error, OSError) or torch_writer):
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    where = f" ({free / 2**20:.1f} MiB free in {path.parent})" if free is not None else ""
    if code in _DISK_FULL_ERRNOS:
        what = "the disk is full"
    elif torch_writer:  # torch's zip writer wrote fewer bytes than it meant to: a short write
        what = "the disk is probably full (torch's writer could not write every byte)"
    else:
        what = "the write failed"
    cause = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    message = (
        f"could not write {path}: {what}{where} ({cause}). The previous {path.name}, if any, is kept "
        "unchanged; free some space (or fix the error) and run the same command again to resume from it"
    )
    return CheckpointWriteError(code if code is not None else errno.EIO, message)


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        failure = _write_failure(path, error) if isinstance(error, Exception) else None
        if failure is not None:
            raise failure from error
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _digest(value: Any, sha: Any) -> None:
    """Feed a canonical encoding of ``value`` (tensors, arrays, containers, primitives) into ``sha``.

    Tuples and lists hash alike and tensors by dtype, shape and bytes (not strides or device), so the
    digest of a state equals that of the state loaded back from its file.
    """
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1)
        sha.update(f"T{data.dtype}{tuple(value.shape)}:".encode())
        sha.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    elif isinstance(value, np.ndarray):
        sha.update(f"A{value.dtype}{value.shape}:".encode())
        sha.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        sha.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            _digest(key, sha)
            _digest(item, sha)
    elif isinstance(value, list | tuple):
        sha.update(f"L{len(value)}:".encode())
        for item in value:
            _digest(item, sha)
    elif value is None or isinstance(value, bool | int | float | complex | str | bytes):
        text = repr(value).encode()
        sha.update(f"P{type(value).__name__}{len(text)}:".encode() + text)
    else:
        text = repr(value).encode()  # torch.dtype, torch.Size and other small values weights_only allows
        sha.update(f"O{type(value).__name__}{len(text)}:".encode() + text)


def state_checksum(state: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of ``state``'s contents, without its ``checksum`` entry."""
    sha = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != CHECKSUM_KEY}, sha)
    return sha.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` with its SHA-256 to ``path`` atomically; stale temporary files of earlier
    killed writes go first. A failed write raises :class:`CheckpointWriteError` and keeps the old file."""
    if CHECKSUM_KEY in state:
        raise ValueError(f"state must not have a {CHECKSUM_KEY!r} entry: save_checkpoint adds it")
    path = Path(path)
    remove_stale_temp_files(path)
    checksum = {"sha256": state_checksum(state), "format": CHECKSUM_FORMAT}
    _atomic_write(path, lambda handle: torch.save({**state, CHECKSUM_KEY: checksum}, handle))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (its checksum verified and removed), or None when there is none.

    Only tensors and plain containers load (``weights_only``). Raises :class:`CheckpointCorruptError` for an
    empty, truncated or altered file, or one holding other objects. Checkpoints written before checksums
    were stored load unverified.
    """
    path = Path(path)
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        raise CheckpointCorruptError(path, "the file is empty (0 bytes), probably from an interrupted copy")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as error:
        raise CheckpointCorruptError(
            path,
            "it holds objects other than tensors and plain values, refused unexecuted "
            f"({refusal_reason(error)})",
        ) from error
    except Exception as error:  # torch's zip reader: RuntimeError, OSError, EOFError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointCorruptError(
            path, f"it is truncated or not a checkpoint ({type(error).__name__}: {first})"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointCorruptError(path, f"it holds a {type(state).__name__}, not a checkpoint's dict")
    checksum = state.pop(CHECKSUM_KEY, None)
    if checksum is None:
        return state  # written before checksums were stored
    if not (isinstance(checksum, dict) and checksum.get("format") == CHECKSUM_FORMAT):
        raise CheckpointCorruptError(path, f"its checksum entry is unreadable ({checksum!r:.80})")
    actual = state_checksum(state)
    if actual != checksum.get("sha256"):
        raise CheckpointCorruptError(
            path,
            f"its contents do not match the SHA-256 stored with it (stored "
            f"{str(checksum.get('sha256'))[:16]}..., now {actual[:16]}...): its bytes changed after writing",
        )
    return state
