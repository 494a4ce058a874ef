"""NFE statistics of a trained MNIST ODE-Net (Figure 3): ``python -m experiments.nfe_stats profile=quick``.

For each tolerance: error of the ODE block's output against a tight float64 reference, median forward
time, forward NFE, backward (adjoint) NFE with the default norm and the seminorm, and the test error.
Each tolerance's measurement is stored as a point file, so a Hydra multirun over ``solver.rtol`` and a
single sweeping run feed the same figure; after every run the figure is redrawn from all points.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from experiments.validation import Checker, ConfigError, check_common
from neuralode.analysis import measure_tolerance, reference_outputs
from neuralode.analysis.figure3 import read_training_nfe, write_figure3
from neuralode.data import ImageBatches, load_mnist
from neuralode.models.mnist import build_mnist_model
from neuralode.training import (
    atomic_write_json,
    load_checkpoint,
    resolve_device,
    run_metadata,
    seed_everything,
)
from neuralode.training.classification import classification_error


def validate_config(cfg: DictConfig) -> None:
    """Types and ranges of every setting, the method by the library's check; raises ConfigError.

    Runs before Hydra makes the run folder (``hydra.callbacks.validate`` in configs/nfe_stats.yaml)."""
    check = Checker(cfg)
    check_common(check)
    check.method("solver.method")
    check.number("solver.rtol", 0, 1, open_low=True, open_high=True, optional=True)
    tolerances = check.get("tolerances")
    if not isinstance(tolerances, list) or not tolerances:
        raise ConfigError(
            "tolerances", tolerances, "tolerances must be a non-empty list of numbers in (0, 1)"
        )
    for i in range(len(tolerances)):
        check.number(f"tolerances[{i}]", 0, 1, open_low=True, open_high=True)
    check.number("reference_rtol", 0, 1, open_low=True, open_high=True)
    check.boolean("train_if_missing")
    for key in (
        "untrained_channels",
        "batch_size",
        "test_batch_size",
        "repeats",
        "profile.nfe_stats.batches",
    ):
        check.integer(key, 1)
    check.integer("profile.nfe_stats.accuracy_batches", 1, optional=True)
    if not isinstance(check.get("checkpoint"), str):
        raise ConfigError("checkpoint", check.get("checkpoint"), "checkpoint must be a path or untrained")


def default_checkpoint(cfg: DictConfig) -> Path:
    """Where ``make table1``/``make figure3`` leave the ODE-Net of this profile."""
    return (
        Path(get_original_cwd())
        / "runs"
        / "mnist"
        / cfg.profile.name
        / "odenet"
        / "default"
        / "checkpoint.pt"
    )


def train_odenet(cfg: DictConfig) -> None:
    """Train this profile's MNIST ODE-Net (resuming one that was interrupted), as ``make figure3`` does."""
    command = [sys.executable, "-m", "experiments.mnist", "model=odenet", f"profile={cfg.profile.name}",
               f"data_dir={cfg.data_dir}", f"device={cfg.device}"]  # fmt: skip
    print(f"no ODE-Net checkpoint yet: training it first ({' '.join(command[1:])})", flush=True)
    subprocess.run(command, check=True, cwd=get_original_cwd())


def load_odenet(
    cfg: DictConfig, device: torch.device
) -> tuple[torch.nn.Module, str, Path | None, int | None]:
    """The ODE-Net to study, its description (with the checkpoint's hash), run folder, batches per epoch."""
    if cfg.checkpoint == "untrained":
        model = build_mnist_model("odenet", channels=cfg.untrained_channels, method=cfg.solver.method)
        description = f"untrained ODE-Net ({cfg.untrained_channels} channels, seed {cfg.seed})"
        return model.to(device), description, None, None
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.exists() and checkpoint == default_checkpoint(cfg) and cfg.train_if_missing:
        train_odenet(cfg)
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"no ODE-Net checkpoint at {checkpoint}: train one with `python -m experiments.mnist "
            f"model=odenet profile={cfg.profile.name}` (make figure3 does this first), or pass "
            "checkpoint=untrained"
        )
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    state = load_checkpoint(checkpoint, map_location="cpu")  # weights_only, checksum verified
    settings = state["settings"]
    model = build_mnist_model(
        "odenet", channels=int(settings.get("model.channels", 64)), method=cfg.solver.method
    )
    model.load_state_dict(state["model"])
    description = f"ODE-Net trained {state['epoch']} epochs ({checkpoint}, sha256 {digest})"
    return model.to(device), description, checkpoint.parent, int(settings["batches_per_epoch"])


def point_name(rtol: float) -> str:
    """The point file of one tolerance (exact to 6 significant digits)."""
    return f"rtol={rtol:.6g}.json"


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Measure the configured tolerances, store them as points, redraw the figure from all points."""
    validate_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    tolerances = (
        [float(cfg.solver.rtol)] if cfg.solver.rtol is not None else [float(t) for t in cfg.tolerances]
    )
    if any(not 0 < t < 1 for t in tolerances):
        raise ValueError(f"tolerances must be in (0, 1), got {tolerances}")
    model, description, mnist_run, batches_per_epoch = load_odenet(cfg, device)
    model.eval()
    profile = cfg.profile.nfe_stats
    images, labels = load_mnist(cfg.data_dir, train=False)
    batches = list(
        ImageBatches(images, labels, cfg.batch_size, max_batches=profile.batches, device=device).epoch(0)
    )
    with torch.no_grad():
        inputs = [model.stem(x) for x, _ in batches]
    targets = [y for _, y in batches]
    references = reference_outputs(model.features, inputs, cfg.reference_rtol)
    test = ImageBatches(
        images, labels, cfg.test_batch_size, max_batches=profile.accuracy_batches, device=device
    )

    def classify(rtol: float) -> float:
        model.features.rtol = model.features.atol = rtol
        return classification_error(model, test.epoch(0))["error"]

    metadata = {
        **run_metadata(device, cfg.seed), "profile": cfg.profile.name, "model": description,
        "method": cfg.solver.method, "reference_rtol": cfg.reference_rtol, "batches": len(inputs),
        "batch_size": cfg.batch_size, "repeats": cfg.repeats, "mnist_run": str(mnist_run),
    }  # fmt: skip
    points_dir = Path(cfg.points_dir)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(run_dir) / "tb"))
    for rtol in tolerances:
        point = measure_tolerance(model.features, model.head, inputs, targets, references, rtol, classify,
                                  repeats=cfg.repeats).as_dict()  # fmt: skip
        atomic_write_json(points_dir / point_name(rtol), {**point, **metadata})
        step = round(-math.log10(rtol) * 100)
        for key, value in point.items():
            if key != "rtol":
                writer.add_scalar(f"sweep/{key}", value, step)
        writer.add_hparams({"rtol": rtol}, {f"hparam/{k}": v for k, v in point.items() if k != "rtol"},
                           run_name=f"rtol={rtol:.0e}")  # fmt: skip
        nfe = f"NFE forward {point['nfe_forward']:.1f}, backward {point['nfe_backward']:.1f}"
        print(f"rtol={rtol:.0e}: {nfe} (seminorm {point['nfe_backward_seminorm']:.1f}), error "
              f"{point['relative_error']:.2e}, {point['forward_seconds']:.4f} s, test error "
              f"{100 * point['test_error']:.2f}%", flush=True)  # fmt: skip
    writer.close()
    points = [json.loads(path.read_text()) for path in sorted(points_dir.glob("rtol=*.json"))]
    setup = ("model", "method", "batch_size", "batches", "reference_rtol")
    same_model = [p for p in points if all(p[key] == metadata[key] for key in setup)]
    training = read_training_nfe(mnist_run) if mnist_run is not None else {
        "epoch": [], "epoch_nfe": [], "iteration": [], "iteration_nfe": []}  # fmt: skip
    ratios = write_figure3(same_model, training, batches_per_epoch, metadata, cfg.out_dir)
    print(f"backward/forward NFE ratio: {ratios['ratio_default']:.2f} (default norm), "
          f"{ratios['ratio_seminorm']:.2f} (seminorm) over {len(same_model)} tolerances -> "
          f"{cfg.out_dir}")  # fmt: skip
    return {"points": same_model, **ratios}


@hydra.main(version_base="1.3", config_path="../configs", config_name="nfe_stats")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the fitted backward/forward NFE ratio (default norm)."""
    from hydra.core.hydra_config import HydraConfig

    return run(cfg, HydraConfig.get().runtime.output_dir)["ratio_default"]


if __name__ == "__main__":
    main()
