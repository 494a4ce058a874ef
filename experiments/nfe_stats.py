"""NFE statistics of a trained MNIST ODE-Net (Figure 3): ``python -m experiments.nfe_stats checkpoint=PATH``.

``checkpoint`` is a trained ODE-Net's ``checkpoint.pt`` (``make figure3`` trains one and passes it), or
``untrained``. For each tolerance: error of the ODE block's output against a tight float64 reference, median
forward time, forward NFE, backward (adjoint) NFE with the default norm and the seminorm, and the test
error. Each tolerance's measurement is stored as a point file, so a Hydra multirun over ``rtol`` and a
single sweeping run feed the same figure, which scripts/make_figure3.py draws from the points.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.solver_group import check_solver_group
from experiments.validation import Checker, ConfigError, check_common
from neuralode import Adjoint, SolverConfig
from neuralode.analysis import at_tolerance, fit_ratio, measure_tolerance, reference_outputs
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

TRAIN = ("train one with `python -m experiments.mnist model=odenet` (make figure3 does), "
         "or pass checkpoint=untrained")  # fmt: skip
NOT_ADJOINT = "Figure 3 measures the adjoint's backward NFE: solver.gradient must be adjoint"
INTEGERS = ("untrained_channels", "batch_size", "test_batch_size", "repeats", "profile.nfe_stats.batches")


def validate_config(cfg: DictConfig) -> None:
    """Types and ranges of every setting, the solver by the library's checks; raises ConfigError.

    Runs before Hydra makes the run folder (``hydra.callbacks.validate`` in configs/nfe_stats.yaml)."""
    check = Checker(cfg)
    check_common(check)
    if not isinstance(check_solver_group(check).gradient, Adjoint):
        raise ConfigError("solver.gradient", check.get("solver.gradient"), NOT_ADJOINT)
    check.number("rtol", 0, 1, open_low=True, open_high=True, optional=True)
    tolerances = check.get("tolerances")
    if not isinstance(tolerances, list) or not tolerances:
        raise ConfigError(
            "tolerances", tolerances, "tolerances must be a non-empty list of numbers in (0, 1)"
        )
    for key in [f"tolerances[{i}]" for i in range(len(tolerances))] + ["reference_rtol"]:
        check.number(key, 0, 1, open_low=True, open_high=True)
    for key in INTEGERS:
        check.integer(key, 1)
    check.integer("profile.nfe_stats.accuracy_batches", 1, optional=True)
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("checkpoint", "???", f"checkpoint must be an ODE-Net's checkpoint.pt: {TRAIN}")
    checkpoint = check.get("checkpoint")
    if not isinstance(checkpoint, str) or (checkpoint != "untrained" and not Path(checkpoint).is_file()):
        raise ConfigError("checkpoint", checkpoint, f"no ODE-Net checkpoint there: {TRAIN}")


def load_odenet(cfg: DictConfig, solver: SolverConfig, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The ODE-Net to study, solving with ``solver``, and what each point records about it: a description
    (with the checkpoint's hash), its training run folder and batches per epoch (for panel (d))."""
    if cfg.checkpoint == "untrained":
        model = build_mnist_model("odenet", channels=cfg.untrained_channels, solver=solver)
        description = f"untrained ODE-Net ({cfg.untrained_channels} channels, seed {cfg.seed})"
        return model.to(device), {"model": description, "mnist_run": None, "batches_per_epoch": None}
    checkpoint = Path(cfg.checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    state = load_checkpoint(checkpoint, map_location="cpu")  # weights_only, checksum verified
    settings = state["settings"]
    model = build_mnist_model("odenet", channels=int(settings.get("model.channels", 64)), solver=solver)
    model.load_state_dict(state["model"])
    return model.to(device), {
        "model": f"ODE-Net trained {state['epoch']} epochs ({checkpoint}, sha256 {digest})",
        "mnist_run": str(checkpoint.parent), "batches_per_epoch": int(settings["batches_per_epoch"]),
    }  # fmt: skip


def point_name(rtol: float) -> str:
    """The point file of one tolerance (exact to 6 significant digits)."""
    return f"rtol={rtol:.6g}.json"


def run(cfg: DictConfig, run_dir: str) -> dict[str, Any]:
    """Measure the configured tolerances and store each as a point; returns the points and their ratio."""
    validate_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    solver = SolverConfig.from_dict(cfg.solver)
    tolerances = [float(cfg.rtol)] if cfg.rtol is not None else [float(t) for t in cfg.tolerances]
    model, about = load_odenet(cfg, solver, device)
    model.eval()
    profile = cfg.profile.nfe_stats
    images, labels = load_mnist(cfg.data_dir, train=False)
    batches = ImageBatches(images, labels, cfg.batch_size, max_batches=profile.batches, device=device)
    with torch.no_grad():
        inputs, targets = zip(*((model.stem(x), y) for x, y in batches.epoch(0)), strict=True)
    references = reference_outputs(model.features, inputs, cfg.reference_rtol)
    test = ImageBatches(images, labels, cfg.test_batch_size, max_batches=profile.accuracy_batches,
                        device=device)  # fmt: skip

    def classify(rtol: float) -> float:  # the whole model at this tolerance; ``model`` is left as it is
        return classification_error(model.with_solver(at_tolerance(solver, rtol)), test.epoch(0))["error"]

    metadata = {
        **run_metadata(device, cfg.seed), "profile": cfg.profile.name, **about, "method": solver.method,
        "reference_rtol": cfg.reference_rtol, "batches": len(inputs), "batch_size": cfg.batch_size,
        "repeats": cfg.repeats,
    }  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter

    writer, points = SummaryWriter(str(Path(run_dir) / "tb")), []
    for rtol in tolerances:
        point = measure_tolerance(model.features, model.head, inputs, targets, references, rtol, classify,
                                  repeats=cfg.repeats).as_dict()  # fmt: skip
        atomic_write_json(Path(cfg.points_dir) / point_name(rtol), {**point, **metadata})
        points.append(point)
        for key, value in point.items():
            if key != "rtol":
                writer.add_scalar(f"sweep/{key}", value, round(-math.log10(rtol) * 100))
        writer.add_hparams({"rtol": rtol}, {f"hparam/{k}": v for k, v in point.items() if k != "rtol"},
                           run_name=f"rtol={rtol:.0e}")  # fmt: skip
        nfe = f"NFE forward {point['nfe_forward']:.1f}, backward {point['nfe_backward']:.1f}"
        print(f"rtol={rtol:.0e}: {nfe} (seminorm {point['nfe_backward_seminorm']:.1f}), error "
              f"{point['relative_error']:.2e}, {point['forward_seconds']:.4f} s, test error "
              f"{100 * point['test_error']:.2f}%", flush=True)  # fmt: skip
    writer.close()
    ratio = fit_ratio([p["nfe_forward"] for p in points], [p["nfe_backward"] for p in points])
    print(f"backward/forward NFE ratio {ratio:.2f} over {len(points)} tolerance(s); points in "
          f"{cfg.points_dir} (scripts/make_figure3.py draws Figure 3 from them)")  # fmt: skip
    return {"points": points, "ratio_default": ratio}


@hydra.main(version_base="1.3", config_path="../configs", config_name="nfe_stats")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the fitted backward/forward NFE ratio (default norm) of this run."""
    return run(cfg, HydraConfig.get().runtime.output_dir)["ratio_default"]


if __name__ == "__main__":
    main()
