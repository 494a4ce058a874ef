"""Data-parallel training: sharded batches, no-op helpers on one process, and 2 gloo processes vs 1."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from neuralode.data import ImageBatches
from neuralode.training import distributed
from tests.fake_mnist import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
# ODE-Net with the adjoint on a fixed rk4 grid: every rank takes the same steps as one process would
# (an adaptive solver adapts to each rank's shard, so its steps, and the loss, would differ at rtol level).
OVERRIDES = ["model=odenet", "solver=rk4", "batch_size=32", "profile=smoke", "epochs=3", "++model.channels=8",
             "test_batch_size=32", "progress=false", "tensorboard=true", "device=cpu",
             "optimizer.lr=0.01"]  # fmt: skip
ITERATIONS = 9  # 3 epochs of the smoke profile's 3 batches
# How far 2 processes' losses may drift from 1 process's: float32 rounding of the sharded convolutions
# (batch 16 vs 32) and of DDP's gradient average grows over the SGD steps, by how much depends on the CPU's
# kernels and on the learning rate (over 9 iterations at lr 0.1: 2e-6 on one machine, 3.8e-5 and, after a
# change in the RK step's summation order, 1.8e-3 on another; at lr 0.01, used here: at most 1.5e-5 per
# iteration and 5.3e-6 in the epoch means).
LOSS_TOLERANCE = 1e-4  # per iteration
EPOCH_LOSS_TOLERANCE = 1e-5  # an epoch's mean loss


def test_shard_bounds_cover_the_batch_once():
    for size in (1, 7, 32, 33):
        for parts in (1, 2, 3):
            if size < parts:
                continue
            bounds = [distributed.shard_bounds(size, part, parts) for part in range(parts)]
            assert bounds[0][0] == 0 and bounds[-1][1] == size
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_image_batch_shards_put_together_are_the_global_batches():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (50,), generator=generator)
    kwargs = {"shuffle": True, "crop_padding": 2, "seed": 5}
    whole = list(ImageBatches(images, labels, 16, **kwargs).epoch(3))
    shards = [
        list(ImageBatches(images, labels, 16, rank=r, world_size=3, **kwargs).epoch(3)) for r in range(3)
    ]
    assert [len(s) for s in shards] == [len(whole)] * 3
    for index, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([s[index][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[index][1] for s in shards]), y)
    with pytest.raises(ValueError, match="rank"):
        ImageBatches(images, labels, 16, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        ImageBatches(images, labels, 2, rank=0, world_size=4)


def test_helpers_are_no_ops_on_one_process():
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.reduce_metrics({"loss": 2}) == {"loss": 2.0}
    assert distributed.reduce_nfe(26, 40) == {
        "nfe_forward": 26.0, "nfe_backward": 40.0, "nfe_forward_max": 26.0, "nfe_backward_max": 40.0,
    }  # fmt: skip
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.barrier()
    device = torch.device("cpu")
    if distributed.env_world_size() == 1:
        assert distributed.init_distributed(device) == device and not distributed.is_distributed()


def _command(data_dir: Path, nproc: int) -> tuple[list[str], dict[str, str]]:
    torchrun = (
        [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    )
    command = [sys.executable, *torchrun, "-m", "experiments.mnist", f"data_dir={data_dir}", *OVERRIDES]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return command, env


def _train(cwd: Path, data_dir: Path, nproc: int) -> tuple[Path, str]:
    """Run the experiment with ``nproc`` processes in ``cwd``; its run folder and its output."""
    cwd.mkdir(parents=True, exist_ok=True)
    command, env = _command(data_dir, nproc)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("ODE-Net: test error") == 1, done.stdout  # printed by rank 0 only
    (run_dir,) = (cwd / "runs/mnist/smoke/odenet").iterdir()
    return run_dir, done.stdout


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_fake_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dir) -> Path:
    """The single-process run every data-parallel run is compared with."""
    return _train(tmp_path_factory.mktemp("one"), data_dir, 1)[0]


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_two_gloo_processes_follow_the_single_process_loss_trajectory(tmp_path, data_dir, one_process):
    one, (two, _) = one_process, _train(tmp_path, data_dir, 2)

    loss_one, loss_two = _scalars(one, "train/loss"), _scalars(two, "train/loss")
    assert [s for s, _ in loss_one] == [s for s, _ in loss_two] == list(range(ITERATIONS))
    difference = max(abs(a - b) for (_, a), (_, b) in zip(loss_one, loss_two, strict=True))
    print(f"max |loss(1 process) - loss(2 processes)| over {len(loss_one)} iterations: {difference:.3g}")
    assert difference < LOSS_TOLERANCE, (loss_one, loss_two)
    result_one = json.loads((one / "result.json").read_text())
    result_two = json.loads((two / "result.json").read_text())
    assert result_one["world_size"] == 1 and result_two["world_size"] == 2
    for row_one, row_two in zip(result_one["history"], result_two["history"], strict=True):
        assert row_two["train_loss"] == pytest.approx(row_one["train_loss"], abs=EPOCH_LOSS_TOLERANCE)
        assert row_two["train_error"] == pytest.approx(row_one["train_error"], abs=1e-9)
        assert row_two["test_error"] == pytest.approx(row_one["test_error"], abs=1e-9)
        # rk4 on a fixed grid: the same NFE on every rank, forward and adjoint
        assert (
            row_two["train_nfe_forward"]
            == row_two["train_nfe_forward_max"]
            == row_one["train_nfe_forward"]
            > 0
        )
        assert (
            row_two["train_nfe_backward"]
            == row_two["train_nfe_backward_max"]
            == row_one["train_nfe_backward"]
            > 0
        )
    assert [v for _, v in _scalars(two, "nfe/backward_max")] == [v for _, v in _scalars(two, "nfe/backward")]
    # rank 0 alone wrote the run's files: one of each, Hydra's config included
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert len(list((two / "tb").rglob("*"))) == len(list((one / "tb").rglob("*")))
    assert not list(two.glob(".*.tmp"))
    assert (two / ".hydra" / "config.yaml").exists()


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_killed_two_process_run_resumes_on_every_rank(tmp_path, data_dir, one_process):
    command, env = _command(data_dir, 2)
    process = subprocess.Popen(command, cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    checkpoints: list[Path] = []
    while not checkpoints and process.poll() is None and time.monotonic() < deadline:
        checkpoints = list(tmp_path.glob("runs/mnist/smoke/odenet/*/checkpoint.pt"))
        time.sleep(0.005)
    for worker in _children(process.pid):  # torchrun starts its workers in sessions of their own
        os.kill(worker, signal.SIGKILL)
    process.kill()
    process.wait()
    assert checkpoints, "no checkpoint was written"
    run_dir = checkpoints[0].parent
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed"

    resumed, out = _train(tmp_path, data_dir, 2)
    assert resumed == run_dir and out.count("resuming") == 1
    result = json.loads((run_dir / "result.json").read_text())
    expected = json.loads((one_process / "result.json").read_text())
    assert 1 <= result["resumed_from_epoch"] <= 2
    for row, want in zip(result["history"], expected["history"], strict=True):
        assert row["train_loss"] == pytest.approx(want["train_loss"], abs=EPOCH_LOSS_TOLERANCE)
        assert row["test_error"] == pytest.approx(want["test_error"], abs=1e-9)


def test_shard_batches_cut_every_tensor_of_any_batch_source():
    def source(epoch):
        for index in range(2):
            x = torch.arange(10.0).reshape(5, 2) + 100 * epoch + 10 * index
            yield {"x": x, "pair": (x[:, 0], "label")}

    shards = [list(distributed.shard_batches(source, part, 2)(1)) for part in range(2)]
    for index, whole in enumerate(source(1)):
        assert torch.equal(torch.cat([s[index]["x"] for s in shards]), whole["x"])
        assert torch.equal(torch.cat([s[index]["pair"][0] for s in shards]), whole["pair"][0])
        assert shards[1][index]["pair"][1] == "label"
    assert [s[0]["x"].shape[0] for s in shards] == [3, 2]
    assert next(iter(distributed.shard_batches(source)(0)))["x"].shape == (5, 2)  # one process: unchanged
    with pytest.raises(ValueError, match="leading size"):
        distributed.shard_batch((torch.zeros(4), torch.zeros(3)), 0, 2)
