"""Peak memory and time of one MNIST training step, per model and per solver tolerance (Table 1's columns).

The paper's memory/time columns are complexity claims: ResNet O(L), RK-Net O(L~) (L~ = function
evaluations), ODE-Net O(1) memory. This measures them. Each point runs in a fresh subprocess: one SGD
step (forward, backward, update) on a batch of 128 training images, with the trained quick/paper
checkpoint when one exists (NFE depends on the weights). Memory is the step's peak above the memory in use
just before it: on CPU the process's peak RSS, reset to the current RSS just before the step (Linux
``/proc/self/clear_refs``); on CUDA ``torch.cuda.max_memory_allocated``. Time is the median of 3
further steps. RK-Net and ODE-Net solve with their run's solver group (its tolerance varied), the
shipped config's (configs/model/) when there is no run.

    .venv/bin/python scripts/measure_mnist_memory.py --profile quick [--device cpu] [--rtols 1e-2 1e-3 1e-4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from neuralode import SolverConfig
from neuralode.data import ImageBatches, load_mnist
from neuralode.models.mnist import MODEL_NAMES, ODE_MODELS, build_mnist_model
from neuralode.training import (
    atomic_write_json,
    current_rss_mb,
    load_checkpoint,
    ode_nfe,
    peak_rss_mb,
    reset_peak_rss,
    resolve_device,
    run_metadata,
)
from neuralode.training.classification import classification_loss

ROOT = Path(__file__).resolve().parents[1]


def model_solver(model: str, runs: Path) -> SolverConfig | None:
    """The ODE block's solver of ``model`` (None for MLP and ResNet): its run's (``result.json``), else
    the shipped config's (``model=<name>``: RK-Net and ODE-Net differ only in its gradient)."""
    if model not in ODE_MODELS:
        return None
    result = runs / model / "default" / "result.json"
    solver = json.loads(result.read_text()).get("solver") if result.exists() else None
    if solver and "gradient" in solver:  # a run from before the solver group had a gradient: the config's
        return SolverConfig.from_dict(solver)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return SolverConfig.from_dict(compose(config_name="mnist", overrides=[f"model={model}"]).solver)


def measure_step(
    model_name: str, solver: SolverConfig | None, checkpoint: Path | None, data_dir: str, device: torch.device
) -> dict:
    """One fresh-process measurement (see the module docstring); ``solver``: the ODE block's, at the
    tolerance under study (None for MLP and ResNet)."""
    torch.manual_seed(0)
    model = build_mnist_model(model_name, solver=solver).to(device)
    if checkpoint is not None and checkpoint.exists():
        model.load_state_dict(
            load_checkpoint(checkpoint, map_location=device)["model"]
        )  # verified, weights_only
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, labels = load_mnist(data_dir, train=True)
    batch = next(iter(ImageBatches(images[:128], labels[:128], 128, device=device).epoch(0)))
    del images, labels

    def step() -> tuple[int, int]:
        loss, _ = classification_loss(model, batch)
        forward = ode_nfe(model)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        return forward, ode_nfe(model)[1]

    reset = True
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        nfe = step()
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - before
    else:
        # The peak RSS is a high-water mark: reset it to the current RSS so that loading the data cannot hide
        # the step's peak. Where the reset is unsupported, the row says so.
        reset = reset_peak_rss()
        before = current_rss_mb()
        nfe = step()
        peak = peak_rss_mb() - before
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {
        "model": model_name, "nfe_forward": nfe[0], "nfe_backward": nfe[1],
        "peak_memory_mb": round(peak, 1), "seconds_per_step": statistics.median(seconds),
        "trained_weights": checkpoint is not None and checkpoint.exists(),
        "peak_reset": reset,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="quick", help="whose checkpoints to load (runs/mnist/<profile>)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "mnist"))
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rtols", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5],
                        help="tolerances of the RK-Net/ODE-Net memory-vs-NFE sweep")  # fmt: skip
    parser.add_argument("--out", default=None, help="default: <runs>/<profile>/memory.json")
    parser.add_argument("--single", nargs=2, metavar=("MODEL", "RTOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    runs = Path(args.runs) / args.profile

    def checkpoint(model: str) -> Path:
        return runs / model / "default" / "checkpoint.pt"

    if args.single:
        model, rtol = args.single[0], float(args.single[1])
        solver = model_solver(model, runs)
        solver = solver.replace(rtol=rtol, atol=rtol) if solver else None
        row = measure_step(model, solver, checkpoint(model), args.data_dir, device)
        print(json.dumps({**row, "rtol": rtol}))
        return
    points = [(model, 1e-3) for model in MODEL_NAMES]
    points += [(model, rtol) for model in ("rknet", "odenet") for rtol in args.rtols if rtol != 1e-3]
    rows = []
    for model, rtol in points:
        command = [sys.executable, __file__, "--single", model, str(rtol), "--profile", args.profile,
                   "--runs", args.runs, "--data-dir", args.data_dir, "--device", str(device)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        nfe = f"NFE {row['nfe_forward']}/{row['nfe_backward']}"
        print(f"{model:7s} rtol={rtol:g}: {nfe}, peak {row['peak_memory_mb']:.0f} MiB, "
              f"{row['seconds_per_step']:.3f} s/step", flush=True)  # fmt: skip
    out = Path(args.out) if args.out else runs / "memory.json"
    atomic_write_json(out, {"rows": rows, "batch_size": 128, **run_metadata(device, 0)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
