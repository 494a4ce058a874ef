"""The shared training loop: exact resume after a crash, determinism, atomic files, batches, lr schedule."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from neuralode.analysis import read_training_nfe
from neuralode.data import ImageBatches
from neuralode.data.batches import random_crop
from neuralode.training import StepSchedule, Trainer, TrainerConfig, atomic_write_text, load_checkpoint
from neuralode.training.classification import classification_error, classification_loss


def _data(n: int = 96):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return images, labels


def _trainer(run_dir, batches_source=None, epochs=3):
    images, labels = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = ImageBatches(images, labels, 16, shuffle=True, crop_padding=2, seed=3)
    test = ImageBatches(images[:32], labels[:32], 16)
    config = TrainerConfig(epochs=epochs, batches_per_epoch=len(train), progress=False, hparams={"lr": 0.05})
    return Trainer(
        model, optimizer, batches_source or train.epoch, classification_loss,
        lambda m: {"test_error": classification_error(m, test.epoch(0))["error"]},
        config, run_dir, torch.device("cpu"), lr_at=StepSchedule(0.05, (0.5,)),
    )  # fmt: skip


TIMING = ("seconds_per_iteration", "wall_s", "cpu_s", "eval_wall_s", "peak_memory_mb")  # differ run to run


def _comparable(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_resume_after_crash_ends_with_the_same_numbers(tmp_path):
    uninterrupted = _trainer(tmp_path / "a")
    expected = uninterrupted.fit()

    images, labels = _data()
    train = ImageBatches(images, labels, 16, shuffle=True, crop_padding=2, seed=3)

    def crashing(epoch):
        for index, batch in enumerate(train.epoch(epoch)):
            if epoch == 2 and index == 2:
                raise KeyboardInterrupt("simulated kill in the middle of epoch 3")
            yield batch

    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b", crashing).fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    resumed = _trainer(tmp_path / "b")
    assert resumed.resumed_from == 2
    result = resumed.fit()
    assert _comparable(result["history"]) == _comparable(expected["history"])
    for p, q in zip(resumed.model.parameters(), uninterrupted.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (
        json.loads((tmp_path / "b" / "result.json").read_text())["final"]["test_error"]
        == result["final"]["test_error"]
    )
    assert (tmp_path / "b" / "epochs.csv").read_text().count("\n") == 4  # header + 3 epochs
    # TensorBoard after the resume: every epoch's summary and every iteration once (none purged, none twice).
    logged = read_training_nfe(tmp_path / "b")
    assert logged["epoch"] == [1.0, 2.0, 3.0]
    assert logged["iteration"] == [float(step) for step in range(3 * resumed.config.batches_per_epoch)]
    events = EventAccumulator(str(tmp_path / "b" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("epoch/test_error")] == [5, 11, 17]


def test_same_seed_same_numbers_and_finished_run_is_not_retrained(tmp_path):
    first = _trainer(tmp_path / "a").fit()
    second = _trainer(tmp_path / "b").fit()
    assert _comparable(first["history"]) == _comparable(second["history"])
    again = _trainer(tmp_path / "a")
    assert again.resumed_from == 3
    before = (tmp_path / "a" / "result.json").read_text()
    assert _comparable(again.fit()["history"]) == _comparable(first["history"])
    assert (tmp_path / "a" / "result.json").read_text() == before  # a finished run's record is kept as it is


def test_every_epoch_records_its_wall_and_cpu_time_in_the_history_and_epochs_csv(tmp_path):
    """wall_s spans the epoch's iterations, so it is at least the sum of their step times; the run's totals
    are the sums over epochs; epochs.csv carries the columns."""
    trainer = _trainer(tmp_path, epochs=2)
    result = trainer.fit()
    steps = trainer.config.batches_per_epoch
    for row in result["history"]:
        assert row["wall_s"] >= row["seconds_per_iteration"] * steps > 0
        assert row["cpu_s"] > 0 and row["eval_wall_s"] > 0
    assert result["train_wall_s"] == pytest.approx(sum(row["wall_s"] for row in result["history"]))
    assert result["train_cpu_s"] == pytest.approx(sum(row["cpu_s"] for row in result["history"]))
    header = (tmp_path / "epochs.csv").read_text().splitlines()[0].split(",")
    assert {"wall_s", "cpu_s", "eval_wall_s", "seconds_per_iteration"} <= set(header)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    with pytest.raises(ValueError, match="different settings"):
        _trainer(tmp_path, epochs=2)


def test_non_finite_loss_stops_with_its_location(tmp_path):
    def bad_batches(epoch):
        x = torch.full((4, 1, 28, 28), float("nan"))
        yield x, torch.zeros(4, dtype=torch.int64)

    trainer = _trainer(tmp_path, bad_batches)
    with pytest.raises(FloatingPointError, match="epoch 0, iteration 0"):
        trainer.fit()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


def test_batches_are_the_same_per_epoch_and_differ_between_epochs():
    images, labels = _data()
    batches = ImageBatches(images, labels, 32, shuffle=True, crop_padding=4, seed=1)
    first = [y for _, y in batches.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in batches.epoch(0)], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, [y for _, y in batches.epoch(1)], strict=True))
    x, _ = next(batches.epoch(0))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len(ImageBatches(images, labels, 32, max_batches=2)) == 2
    assert (
        len(ImageBatches(images, labels, 40)) == 3
        and len(ImageBatches(images, labels, 40, drop_last=True)) == 2
    )


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    images = torch.arange(2 * 5 * 5, dtype=torch.uint8).reshape(2, 5, 5)
    generator = torch.Generator().manual_seed(0)
    cropped = random_crop(images, 2, generator)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):
        r, c = offsets[0, b], offsets[1, b]
        assert torch.equal(cropped[b], padded[b, r : r + 5, c : c + 5])


def test_step_schedule_follows_the_paper_shape():
    schedule = StepSchedule(0.1)
    assert [schedule(p) for p in (0.0, 0.374, 0.375, 0.7, 0.9)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 1e-4]
    )
    with pytest.raises(ValueError, match="milestones"):
        StepSchedule(0.1, (60, 100))
    with pytest.raises(ValueError, match="lr"):
        StepSchedule(0.0)


def test_bad_batch_inputs_are_named():
    images, labels = _data()
    with pytest.raises(ValueError, match="uint8"):
        ImageBatches(images.float(), labels, 8)
    with pytest.raises(ValueError, match="labels"):
        ImageBatches(images, labels[:5], 8)
    with pytest.raises(ValueError, match="batch_size"):
        ImageBatches(images, labels, 0)


def test_run_metadata_records_versions_commit_and_device():
    from importlib.metadata import version

    from neuralode.training.reproducibility import package_versions, run_metadata

    meta = run_metadata(torch.device("cpu"), seed=3)
    assert meta["seed"] == 3 and meta["device"].startswith("CPU") and meta["commit"]
    assert meta["packages"]["torch"] == version("torch") and meta["packages"]["numpy"] == version("numpy")
    assert package_versions(("surely-not-a-package-xyz",)) == {"surely-not-a-package-xyz": "not installed"}
    assert {"cudnn_deterministic", "cudnn_benchmark", "date", "python"} <= set(meta)


def test_git_commit_from_the_environment_wins(tmp_path, monkeypatch):
    from neuralode.training.reproducibility import git_commit

    monkeypatch.delenv("NEURALODE_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # tmp_path is not in a git repository
    monkeypatch.setenv("NEURALODE_GIT_COMMIT", "abc123def456")
    assert git_commit(tmp_path) == "abc123def456"
    assert git_commit() == "abc123def456"  # also inside this repository (a shipped copy's .git may be stale)
