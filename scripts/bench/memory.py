"""Case 5: peak memory of forward+backward of the ODE-Net block with rk4, one fresh subprocess per
point (``--memory-point``), so that no point inherits another's allocator state."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import torch

from neuralode.training.monitor import current_rss_mb, peak_rss_mb, reset_peak_rss

from .adapters import SOLVE, memory_modes
from .config import ROOT
from .problems import block_input, make_block_field


def memory_point(lib: str, mode: str, steps: int, channels: int, size: int, batch: int) -> dict:
    """Forward+backward of the block with rk4 at ``steps`` steps; peak RSS above the RSS just before."""
    field = make_block_field(channels)
    x = block_input(batch, channels, size)
    t = torch.tensor([0.0, 1.0])
    options = {"step_size": 1.0 / steps}
    # warm up once at one step so that one-off allocations (kernels, thread pools) are not counted
    SOLVE[lib](field, x, t, 1e-3, 1e-3, mode, "rk4", {"step_size": 1.0})[-1].square().mean().backward()
    field.zero_grad(set_to_none=True)
    reset = reset_peak_rss()
    before = current_rss_mb()
    SOLVE[lib](field, x, t, 1e-3, 1e-3, mode, "rk4", options)[-1].square().mean().backward()
    peak = peak_rss_mb() - before
    return {"library": lib, "mode": mode, "steps": steps, "peak_mb": round(peak, 1), "peak_reset": reset}


def case_memory(libs: list[str], cfg: dict, threads: int) -> list[dict]:
    """One fresh subprocess per point; the adjoint's points (whose flatness is the claim) are measured
    ``cfg["memory_repeats"]`` times and report the median, since a single peak-RSS reading moves by a
    few MiB with the allocator; the others, which grow with the steps, once."""
    rows = []
    for steps in cfg["memory_steps"]:
        for lib in [lib for lib in libs if lib != "torchode"]:  # torchode has no fixed-step rk4
            for mode in memory_modes(lib):
                command = [
                    sys.executable,
                    "-m",
                    __package__,  # scripts.bench, run from the repository root
                    "--memory-point",
                    lib,
                    mode,
                    str(steps),
                    str(cfg["block_channels"]),
                    str(cfg["block_size"]),
                    str(cfg["block_batch"]),
                    "--threads",
                    str(threads),
                ]
                repeats = cfg["memory_repeats"] if mode == "adjoint" else 1
                readings = []
                for _ in range(repeats):
                    output = subprocess.run(
                        command, check=True, capture_output=True, text=True, cwd=ROOT
                    ).stdout
                    readings.append(json.loads(output.strip().splitlines()[-1]))
                row = dict(readings[0])
                row["peak_mb_all"] = [r["peak_mb"] for r in readings]
                row["peak_mb"] = statistics.median(row["peak_mb_all"])
                rows.append(row)
                print(
                    f"case 5 {lib} {mode} {steps} steps: {row['peak_mb']:.0f} MiB {row['peak_mb_all']}",
                    flush=True,
                )
    return rows
