"""Performance benchmark: neuralode vs torchdiffeq vs torchode, side by side in one process (issue 8).

Every timed case runs the libraries round-robin, interleaved over repeats, and reports the median time
of each; ratios are of medians. NFE is counted by a wrapper around the vector field (the same wrapper
for every library), which also accumulates the wall time spent inside the field, so the overhead ratio
(total time / time inside func) comes from the same calls as the totals. Errors are against a
tight-tolerance float64 reference (neuralode dopri8, rtol=atol=1e-12). Cases:

1. dopri5 forward, tanh-MLP field (dim 2, hidden 64), batch 512 and 16, float32 and float64,
   rtol=atol=1e-6, 10 output times; plus a tolerance sweep to compare at equal accuracy.
2. Solver overhead (total / time inside func) of the case-1 calls.
3. Gradients on case 1: direct backprop, adjoint, seminorm adjoint (and neuralode's checkpointed
   adjoint, odeint_checkpoint); time of forward+backward and the relative gradient error against a
   float64 direct-backprop reference.
4. ODE-Net block (ConvODEFunc, 64 channels, 6x6, GroupNorm, batch 128, dopri5 rtol=atol=1e-3,
   float32): forward, and forward+adjoint backward.
5. Peak memory of forward+backward of that block with rk4 at 10, 40, 160 steps, direct vs adjoint
   (and neuralode's checkpointed adjoint, one checkpoint per step), each point in a fresh subprocess
   (peak RSS above the RSS just before the pass).

torchdiffeq and torchode are optional (requirements/bench.txt); a library that is not installed is
left out and the output says so. ``--quick`` is a seconds-long smoke run with tiny sizes (its numbers
mean nothing).

    .venv/bin/python scripts/bench.py [--quick] [--threads 1] [--libraries neuralode torchdiffeq torchode]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import neuralode  # noqa: E402
import neuralode.gradients.adjoint  # noqa: E402
from neuralode.models.mnist import ConvODEFunc  # noqa: E402
from neuralode.training.monitor import current_rss_mb, peak_rss_mb, reset_peak_rss  # noqa: E402
from neuralode.training.reproducibility import git_commit  # noqa: E402

LIBRARIES = ("neuralode", "torchdiffeq", "torchode")


# ----------------------------------------------------------------------------------------------------
# Instrumented vector fields


class Timed(nn.Module):
    """Wraps a field f(t, y): counts calls and accumulates the wall time spent inside them.

    torchode passes a per-sample time of shape (batch,); ``per_sample_t`` reshapes it for fields that
    want a scalar-like t (the conv block broadcasts t over its own time channel), and ``flat_shape``
    un-flattens torchode's (batch, features) state (or one sample's (features,), which its adjoint
    vmaps over).
    """

    def __init__(self, field: nn.Module, flat_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.field = field
        self.flat_shape = flat_shape
        self.meter = Meter()  # a plain object: nn.Module.__setattr__ would cost some us per call

    def reset(self) -> None:
        self.meter.calls, self.meter.seconds = 0, 0.0

    @property
    def calls(self) -> int:
        return self.meter.calls

    @property
    def seconds(self) -> float:
        return self.meter.seconds

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        start = time.perf_counter()
        if self.flat_shape is not None and y.dim() == 1:  # torchode's adjoint: one sample, vmapped
            out = self.field(t.reshape(()), y.view(1, *self.flat_shape)).reshape(-1)
        elif self.flat_shape is not None:  # torchode: y (batch, features), t (batch,)
            out = self.field(t.view(-1, 1, 1, 1), y.view(-1, *self.flat_shape)).flatten(1)
        else:
            out = self.field(t, y)
        meter = self.meter
        meter.seconds += time.perf_counter() - start
        meter.calls += 1
        return out


class Meter:
    """Calls and seconds inside a field (see ``Timed``)."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0


class TanhMLP(nn.Module):
    """The case-1 field: dy/dt = W2 tanh(W1 y + b1) + b2 (autonomous)."""

    def __init__(self, dim: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def make_mlp(dtype: torch.dtype) -> TanhMLP:
    torch.manual_seed(0)
    return TanhMLP().to(dtype)


# ----------------------------------------------------------------------------------------------------
# Library adapters: solve(field, y0, t, rtol, atol, mode) -> ys of shape (T, *y0.shape)
# mode: "direct" (backprop through the solver), "adjoint", "seminorm" (adjoint, seminorm), "nograd",
# and for neuralode only "checkpoint" (odeint_checkpoint, a checkpoint at every step)


def available_libraries(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    found, missing = [], {}
    for name in requested:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing[name] = f"not installed ({error})"
            continue
        found.append(name)
    return found, missing


def library_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def solve_neuralode(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    carry = {"carry_step_size": False} if mode.endswith("-nocarry") else {}
    mode = mode.removesuffix("-nocarry")
    if mode in ("direct", "nograd"):
        return neuralode.odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    if mode == "checkpoint":
        return neuralode.odeint_checkpoint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    adjoint_options = {**({"norm": "seminorm"} if mode == "seminorm" else {}), **carry} or None
    return neuralode.odeint_adjoint(
        field, y0, t, rtol=rtol, atol=atol, method=method, options=options, adjoint_options=adjoint_options
    )


def solve_torchdiffeq(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    import torchdiffeq

    if mode in ("direct", "nograd"):
        return torchdiffeq.odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    adjoint_options = {"norm": "seminorm"} if mode == "seminorm" else None
    return torchdiffeq.odeint_adjoint(
        field, y0, t, rtol=rtol, atol=atol, method=method, options=options, adjoint_options=adjoint_options
    )


def solve_torchode(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    """torchode solves a batch of independent problems, state (batch, features); each sample gets its
    own step size (its error norm is per sample, unlike the two others, which control the whole batch)."""
    import torchode

    if method != "dopri5":
        raise ValueError("torchode: only dopri5 is benchmarked")
    batch = y0.shape[0]
    term = torchode.ODETerm(field)
    step = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    if mode in ("direct", "nograd"):
        solver = torchode.AutoDiffAdjoint(step, controller)
    elif mode == "adjoint":  # the joint variant: one backward solve of the whole batch, like the others
        solver = torchode.JointBacksolveAdjoint(term, step, controller)
    else:
        raise NotImplementedError("torchode has no seminorm adjoint")
    t_eval = t.to(y0.dtype).expand(batch, -1)
    solution = solver.solve(torchode.InitialValueProblem(y0=y0.flatten(1), t_eval=t_eval))
    return solution.ys.transpose(0, 1).reshape(len(t), *y0.shape)


SOLVE: dict[str, Callable] = {
    "neuralode": solve_neuralode,
    "torchdiffeq": solve_torchdiffeq,
    "torchode": solve_torchode,
}
MODES = {  # which gradient modes each library supports
    "neuralode": ("direct", "adjoint", "seminorm"),
    "torchdiffeq": ("direct", "adjoint", "seminorm"),
    "torchode": ("direct", "adjoint"),
}
# Case 3 also runs neuralode's adjoint without carrying the step size across output intervals (the A/B
# of that lever: adjoint_options={"carry_step_size": False}).
NOCARRY_MODES = ("adjoint-nocarry", "seminorm-nocarry")
# Cases 3 and 5 also run neuralode's checkpointed adjoint (no peer has one): its gradient is direct
# backprop's, its memory the checkpoints plus one step's graph.
CHECKPOINT_MODES = ("checkpoint",)


# ----------------------------------------------------------------------------------------------------
# Timing helpers


def round_robin(jobs: dict[str, Callable[[], dict]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Run every job ``warmup`` times, then ``repeats`` times interleaved, each round starting one job
    later (A B C, B C A, C A B, ...) so that no job always follows the same predecessor (whose freed
    memory and caches it would inherit); each job returns a dict with "seconds" and other per-run
    values; report medians of the numbers."""
    for _ in range(warmup):
        for job in jobs.values():
            job()
    names = list(jobs)
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(jobs[name]())
    out = {}
    for name, rows in runs.items():
        summary = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if all(isinstance(v, int | float) for v in values):
                summary[key] = statistics.median(values)
            else:
                summary[key] = values[-1]
        summary["repeats"] = repeats
        summary["seconds_all"] = [row["seconds"] for row in rows]
        out[name] = summary
    return out


def max_error(ys: Tensor, reference: Tensor) -> float:
    return (ys.detach().double() - reference).abs().max().item()


# ----------------------------------------------------------------------------------------------------
# Cases 1-2: MLP forward, overhead, tolerance sweep


def mlp_problem(batch: int, dtype: torch.dtype, n_times: int = 10, t1: float = 5.0):
    generator = torch.Generator().manual_seed(1)
    y0 = torch.randn(batch, 2, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.linspace(0.0, t1, n_times, dtype=torch.float64).to(dtype)
    return y0, t


def mlp_reference(batch: int, n_times: int) -> Tensor:
    y0, t = mlp_problem(batch, torch.float64, n_times)
    field = make_mlp(torch.float64)
    with torch.no_grad():
        return neuralode.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")


def forward_job(lib: str, field: Timed, y0: Tensor, t: Tensor, tol: float, reference: Tensor):
    def job() -> dict:
        field.reset()
        start = time.perf_counter()
        with torch.no_grad():
            ys = SOLVE[lib](field, y0, t, tol, tol, "nograd")
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "func_seconds": field.seconds,
            "overhead_ratio": seconds / field.seconds,
            "nfe": field.calls,
            "error": max_error(ys, reference),
        }

    return job


def case_forward(libs: list[str], cfg: dict) -> list[dict]:
    rows = []
    for batch in cfg["batches"]:
        reference = mlp_reference(batch, cfg["n_times"])
        for dtype in (torch.float32, torch.float64):
            y0, t = mlp_problem(batch, dtype, cfg["n_times"])
            fields = {lib: Timed(make_mlp(dtype)) for lib in libs}
            jobs = {lib: forward_job(lib, fields[lib], y0, t, cfg["tol"], reference) for lib in libs}
            result = round_robin(jobs, cfg["repeats"])
            for lib in libs:
                rows.append(
                    {
                        "batch": batch,
                        "dtype": str(dtype).replace("torch.", ""),
                        "tol": cfg["tol"],
                        "library": lib,
                        **result[lib],
                    }
                )
            print(
                f"case 1 batch={batch} {dtype}: "
                + ", ".join(
                    f"{lib} {result[lib]['seconds'] * 1e3:.1f} ms (NFE {result[lib]['nfe']:.0f})"
                    for lib in libs
                ),
                flush=True,
            )
    return rows


def case_sweep(libs: list[str], cfg: dict) -> list[dict]:
    """Time and error over tolerances (batch cfg['sweep_batch'], float64), all tolerances and libraries
    interleaved."""
    batch = cfg["sweep_batch"]
    reference = mlp_reference(batch, cfg["n_times"])
    y0, t = mlp_problem(batch, torch.float64, cfg["n_times"])
    jobs = {}
    for tol in cfg["sweep_tols"]:
        for lib in libs:
            jobs[(lib, tol)] = forward_job(lib, Timed(make_mlp(torch.float64)), y0, t, tol, reference)
    result = round_robin(jobs, cfg["sweep_repeats"])
    rows = [
        {"batch": batch, "dtype": "float64", "tol": tol, "library": lib, **result[(lib, tol)]}
        for (lib, tol) in jobs
    ]
    print("tolerance sweep done", flush=True)
    return rows


def time_at_error(rows: list[dict], lib: str, error: float) -> float | None:
    """Time of ``lib`` at the given error, interpolated log-log between its sweep points (None outside)."""
    points = sorted((r["error"], r["seconds"]) for r in rows if r["library"] == lib and r["error"] > 0)
    for (e0, s0), (e1, s1) in itertools.pairwise(points):
        if e0 <= error <= e1:
            if e1 == e0:
                return s0
            w = (math.log(error) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0)))
    return None


# ----------------------------------------------------------------------------------------------------
# Case 3: gradients


def gradient_problem(batch: int, dtype: torch.dtype, n_times: int):
    y0, t = mlp_problem(batch, dtype, n_times)
    weights = torch.randn(n_times, batch, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return y0, t, weights.to(dtype)


def flat_grad(field: nn.Module) -> Tensor:
    return torch.cat([p.grad.reshape(-1).double() for p in field.parameters()])


def gradient_reference(batch: int, n_times: int) -> Tensor:
    y0, t, weights = gradient_problem(batch, torch.float64, n_times)
    field = make_mlp(torch.float64)
    ys = neuralode.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    (ys * weights).sum().backward()
    return flat_grad(field)


def case_gradients(libs: list[str], cfg: dict) -> list[dict]:
    rows = []
    batch = cfg["grad_batch"]
    reference = gradient_reference(batch, cfg["n_times"])
    for dtype in cfg["grad_dtypes"]:
        y0, t, weights = gradient_problem(batch, dtype, cfg["n_times"])
        jobs = {}
        for lib in libs:
            for mode in MODES[lib] + (NOCARRY_MODES + CHECKPOINT_MODES if lib == "neuralode" else ()):
                field = Timed(make_mlp(dtype))

                def job(lib=lib, mode=mode, field=field, y0=y0, t=t, weights=weights) -> dict:
                    field.zero_grad(set_to_none=True)
                    field.reset()
                    start = time.perf_counter()
                    ys = SOLVE[lib](field, y0, t, cfg["tol"], cfg["tol"], mode)
                    nfe_forward = field.calls
                    (ys * weights).sum().backward()
                    seconds = time.perf_counter() - start
                    grad = flat_grad(field)
                    return {
                        "seconds": seconds,
                        "nfe_forward": nfe_forward,
                        "nfe_backward": field.calls - nfe_forward,
                        "grad_rel_error": ((grad - reference).norm() / reference.norm()).item(),
                    }

                jobs[(lib, mode)] = job
        result = round_robin(jobs, cfg["grad_repeats"])
        for (lib, mode), summary in result.items():
            rows.append(
                {
                    "batch": batch,
                    "dtype": str(dtype).replace("torch.", ""),
                    "tol": cfg["tol"],
                    "library": lib,
                    "mode": mode,
                    **summary,
                }
            )
        print(f"case 3 {dtype} done", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------
# Case 4: ODE-Net block


def make_block_field(channels: int) -> ConvODEFunc:
    torch.manual_seed(0)
    return ConvODEFunc(channels)


def block_input(batch: int, channels: int, size: int) -> Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(3))


def case_block(libs: list[str], cfg: dict) -> list[dict]:
    channels, size, batch, tol = cfg["block_channels"], cfg["block_size"], cfg["block_batch"], 1e-3
    x = block_input(batch, channels, size)
    t = torch.tensor([0.0, 1.0])
    jobs = {}
    for lib in libs:
        for mode in ("nograd", *(m for m in MODES[lib] if m != "direct")):
            flat_shape = (channels, size, size) if lib == "torchode" else None
            field = Timed(make_block_field(channels), flat_shape)

            def job(lib=lib, mode=mode, field=field) -> dict:
                field.zero_grad(set_to_none=True)
                field.reset()
                start = time.perf_counter()
                if mode == "nograd":
                    with torch.no_grad():
                        SOLVE[lib](field, x, t, tol, tol, mode)
                    return {
                        "seconds": time.perf_counter() - start,
                        "nfe_forward": field.calls,
                        "nfe_backward": 0,
                        "func_seconds": field.seconds,
                    }
                ys = SOLVE[lib](field, x, t, tol, tol, mode)
                nfe_forward = field.calls
                ys[-1].square().mean().backward()
                return {
                    "seconds": time.perf_counter() - start,
                    "nfe_forward": nfe_forward,
                    "nfe_backward": field.calls - nfe_forward,
                    "func_seconds": field.seconds,
                }

            jobs[(lib, mode)] = job
    result = round_robin(jobs, cfg["block_repeats"])
    rows = [
        {"library": lib, "mode": "forward" if mode == "nograd" else mode, **summary}
        for (lib, mode), summary in result.items()
    ]
    print("case 4 done", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------
# Case 6: does torch.compile help on CPU?


def _error_ratio_kernel(K_t: Tensor, b_err: Tensor, y_abs: Tensor, y1_abs: Tensor, rtol: float, atol: float):
    """The solver's per-step error norm, written as one function so that torch.compile can fuse it."""
    scale = torch.maximum(y_abs, y1_abs) * rtol + atol
    return torch.linalg.vector_norm(torch.mv(K_t, b_err) / scale)


def case_compile(cfg: dict) -> list[dict]:
    """Eager vs ``torch.compile`` for the two things one could compile: the per-step error norm (the
    solver's own arithmetic) and the vector field (the user's side), in a dopri5 solve of case 1."""
    rows = []
    for batch in cfg["batches"]:
        n = 2 * batch
        generator = torch.Generator().manual_seed(0)
        K_t = torch.randn(7, n, generator=generator).t()
        b_err, y_abs, y1_abs = torch.randn(7), torch.rand(n), torch.rand(n)
        start = time.perf_counter()
        compiled_kernel = torch.compile(_error_ratio_kernel, dynamic=False)
        float(compiled_kernel(K_t, b_err, y_abs, y1_abs, 1e-6, 1e-6))
        kernel_compile = time.perf_counter() - start
        y0, t = mlp_problem(batch, torch.float32, cfg["n_times"])
        field = make_mlp(torch.float32)
        compiled_field = torch.compile(field, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            neuralode.odeint(compiled_field, y0, t, rtol=cfg["tol"], atol=cfg["tol"])
        field_compile = time.perf_counter() - start

        def kernel_job(kernel, args: tuple) -> Callable[[], dict]:
            def job() -> dict:
                start = time.perf_counter()
                for _ in range(100):
                    float(kernel(*args, 1e-6, 1e-6))
                return {"seconds": (time.perf_counter() - start) / 100}

            return job

        def solve_job(f, y0: Tensor, t: Tensor, tol: float) -> Callable[[], dict]:
            def job() -> dict:
                start = time.perf_counter()
                with torch.no_grad():
                    neuralode.odeint(f, y0, t, rtol=tol, atol=tol)
                return {"seconds": time.perf_counter() - start}

            return job

        kernel_args = (K_t, b_err, y_abs, y1_abs)
        result = round_robin(
            {
                "norm eager": kernel_job(_error_ratio_kernel, kernel_args),
                "norm compiled": kernel_job(compiled_kernel, kernel_args),
                "solve, field eager": solve_job(field, y0, t, cfg["tol"]),
                "solve, field compiled": solve_job(compiled_field, y0, t, cfg["tol"]),
            },
            cfg["repeats"],
        )
        for what, compile_seconds in (("norm", kernel_compile), ("solve, field", field_compile)):
            eager, compiled = result[f"{what} eager"], result[f"{what} compiled"]
            rows.append(
                {
                    "batch": batch,
                    "what": "error norm of one step" if what == "norm" else "dopri5 solve (case 1)",
                    "eager_seconds": eager["seconds"],
                    "compiled_seconds": compiled["seconds"],
                    "compile_seconds": compile_seconds,
                }
            )
        print(f"case 6 batch={batch} done", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------
# Case 5: peak memory, one fresh subprocess per point


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


def memory_modes(lib: str) -> tuple[str, ...]:
    """The gradient modes of case 5: direct and adjoint, and neuralode's checkpointed adjoint."""
    return ("direct", "adjoint", *(CHECKPOINT_MODES if lib == "neuralode" else ()))


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
                    __file__,
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
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
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


def plot_memory(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for lib, marker in (("neuralode", "o"), ("torchdiffeq", "s")):
        for mode, style in (("direct", "-"), ("adjoint", "--"), ("checkpoint", ":")):
            points = sorted(
                (r["steps"], r["peak_mb"]) for r in rows if r["library"] == lib and r["mode"] == mode
            )
            if points:
                steps, peaks = zip(*points, strict=True)
                ax.plot(steps, [max(p, 1.0) for p in peaks], style, marker=marker, label=f"{lib} {mode}")
    ax.set_xlabel("rk4 steps")
    ax.set_ylabel("peak RSS of forward+backward (MiB)")
    ax.set_xscale("log")
    ax.set_yscale("log")  # peaks are clamped to >= 1 MiB for the log axis (the table has the values)
    ax.set_title("ODE-Net block, batch 128: memory vs steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Report


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or a == 0 else f"{b / a:.2f}x"


def summary_lines(result: dict) -> list[str]:
    """The issue's targets next to this run's ratios (peer median / neuralode median)."""
    lines = ["## Against the targets of issue 8", "", "| target | measured | met |", "|---|---|---|"]

    def add(target: str, measured: str, met: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {'-' if met is None else ('yes' if met else 'no')} |")

    def pick(rows, **match):
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    forward = result["case1_forward"]
    for batch, goal, overhead_goal in ((512, 2.0, 1.35), (16, 2.5, 1.6)):
        for dtype in ("float32", "float64"):
            ours = pick(forward, batch=batch, dtype=dtype, library="neuralode")
            peer = pick(forward, batch=batch, dtype=dtype, library="torchdiffeq")
            if ours and peer:
                r = peer["seconds"] / ours["seconds"]
                add(
                    f"case 1, batch {batch} {dtype}: >= {goal}x torchdiffeq, NFE <= its NFE",
                    f"{r:.2f}x, NFE {ours['nfe']:.0f} vs {peer['nfe']:.0f}",
                    r >= goal and ours["nfe"] <= peer["nfe"],
                )
            if ours:
                add(
                    f"case 2, batch {batch} {dtype}: overhead <= {overhead_goal}",
                    f"{ours['overhead_ratio']:.2f}",
                    ours["overhead_ratio"] <= overhead_goal,
                )
    for dtype in ("float32", "float64"):
        for mode in ("adjoint", "seminorm"):
            ours = pick(result["case3_gradients"], dtype=dtype, library="neuralode", mode=mode)
            peers = [
                pick(result["case3_gradients"], dtype=dtype, library=lib, mode=mode)
                for lib in ("torchdiffeq", "torchode")
            ]
            peers = [p for p in peers if p]
            if ours and peers:
                ratios = ", ".join(f"{p['library']} {p['seconds'] / ours['seconds']:.2f}x" for p in peers)
                add(
                    f"case 3, {dtype} {mode}: faster than the peers",
                    ratios,
                    all(p["seconds"] > ours["seconds"] for p in peers),
                )
    for dtype in ("float32", "float64"):
        direct = pick(result["case3_gradients"], dtype=dtype, library="neuralode", mode="direct")
        ours = pick(result["case3_gradients"], dtype=dtype, library="neuralode", mode="checkpoint")
        if direct and ours:
            e_d, e_c = direct["grad_rel_error"], ours["grad_rel_error"]
            add(
                f"case 3, {dtype} checkpoint: gradient error equals direct backprop's",
                f"{e_c:.2e} vs {e_d:.2e}, time {ours['seconds'] / direct['seconds']:.2f}x direct",
                # to rounding: in float32, direct backprop (stacked stages) and the graph-free forward
                # (stage buffer) round differently, so their step sequences and states differ slightly
                abs(e_c - e_d) <= 1e-3 * e_d + (1e-6 if dtype == "float32" else 1e-12),
            )
    block = result["case4_block"]
    for mode in ("adjoint", "seminorm"):
        ours = pick(block, library="neuralode", mode=mode)
        tdq = pick(block, library="torchdiffeq", mode=mode)
        tode = pick(block, library="torchode", mode="adjoint")
        if ours and tdq:
            r = tdq["seconds"] / ours["seconds"]
            extra = f", torchode (adjoint) {tode['seconds'] / ours['seconds']:.2f}x" if tode else ""
            add(
                f"case 4, {mode}: >= 2.5x torchdiffeq, faster than torchode",
                f"torchdiffeq {r:.2f}x{extra}",
                r >= 2.5 and (tode is None or tode["seconds"] > ours["seconds"]),
            )
    memory = result["case5_memory"]
    ours = sorted(
        (r["steps"], r["peak_mb"]) for r in memory if r["library"] == "neuralode" and r["mode"] == "adjoint"
    )
    peer = sorted(
        (r["steps"], r["peak_mb"]) for r in memory if r["library"] == "torchdiffeq" and r["mode"] == "adjoint"
    )
    if len(ours) >= 2:
        spread = max(m for _, m in ours) - min(m for _, m in ours)
        no_higher = not peer or ours[-1][1] <= peer[-1][1] + 5
        add(
            "case 5: adjoint peak flat over steps (a few MB), no higher than torchdiffeq's",
            f"spread {spread:.0f} MiB over {ours[0][0]}-{ours[-1][0]} steps; at {ours[-1][0]} steps "
            f"{ours[-1][1]:.0f} vs torchdiffeq {peer[-1][1]:.0f} MiB"
            if peer
            else f"spread {spread:.0f} MiB",
            spread <= 5 and no_higher,
        )
    direct = sorted(
        (r["steps"], r["peak_mb"]) for r in memory if r["library"] == "neuralode" and r["mode"] == "direct"
    )
    if len(direct) >= 2:
        slope = (direct[-1][1] - direct[0][1]) / (direct[-1][0] - direct[0][0])
        add("case 5: direct backprop grows (about 30 MB per step)", f"{slope:.0f} MiB per rk4 step", None)
    for row in result.get("case6_compile", []):
        if row["what"].startswith("dopri5"):
            r = row["compiled_seconds"] / row["eager_seconds"]
            add(
                f"optional: torch.compile helps on CPU (batch {row['batch']}; kept only if it does)",
                f"compiled field: {r:.2f}x the eager solve's time" + (" (not kept)" if r >= 1 else ""),
                None,
            )
    return [*lines, "", "Ratios are from this one run; on a shared machine they move between runs.", ""]


def write_markdown(result: dict, path: Path) -> None:
    meta = result["meta"]
    libs = meta["libraries"]
    out = ["# Performance benchmark (`make bench`)", ""]
    if meta["quick"]:
        out += ["**Smoke run (`--quick`): tiny sizes and one repeat; these numbers mean nothing.**", ""]
    out += [
        f"- date: {meta['date']}; commit: {meta['commit']}",
        f"- machine: {meta['machine']}; torch threads: {meta['threads']} (set with `--threads`)",
        f"- load average before the run: {meta['load_before']}; after: {meta['load_after']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- libraries left out: {meta['missing'] or 'none'}",
        f"- total benchmark time: {meta['total_seconds']:.0f} s (per case: "
        + ", ".join(f"{k}: {v:.0f} s" for k, v in meta["case_seconds"].items())
        + ")",
        "",
        "Times are medians over round-robin interleaved repeats in one process; ratios are peer time / "
        "neuralode time (> 1 means neuralode is faster). NFE is counted by the same wrapper around the "
        "field for every library; error is the max abs error over all outputs against a float64 "
        "dopri8 solve at rtol=atol=1e-12. torchode controls the error of each sample separately "
        "(per-sample step sizes); neuralode and torchdiffeq control the whole batch with one step size.",
        "",
    ]
    if meta.get("shared"):
        out += [
            f"**The machine was shared with other jobs during this run** (1-minute load average "
            f"{meta['load_before'].split()[0]} before it started, on {os.cpu_count()} logical CPUs): "
            "absolute times are inflated and noisy; the interleaved medians and ratios are what to read, and "
            "even they move by some 10-30% between runs.",
            "",
        ]
    if meta.get("note"):
        out += [meta["note"], ""]

    out += summary_lines(result)
    forward = result["case1_forward"]
    cfg = result["config"]
    out += [
        f"## Case 1-2: dopri5 forward, tanh-MLP (dim 2, hidden 64), rtol=atol={cfg['tol']:g}, "
        f"{cfg['n_times']} output times",
        "",
    ]
    out += [
        "| batch | dtype | library | time (ms) | vs neuralode | NFE | max error | overhead (total/func) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in forward:
        base = next(
            r
            for r in forward
            if r["batch"] == row["batch"] and r["dtype"] == row["dtype"] and r["library"] == "neuralode"
        )
        out.append(
            f"| {row['batch']} | {row['dtype']} | {row['library']} | {row['seconds'] * 1e3:.2f} | "
            f"{ratio(base['seconds'], row['seconds'])} | {row['nfe']:.0f} | {row['error']:.1e} | "
            f"{row['overhead_ratio']:.2f} |"
        )
    out.append("")

    sweep = result["case1_sweep"]
    if sweep:
        out += [f"### Tolerance sweep (batch {sweep[0]['batch']}, float64)", ""]
        out += [
            "| rtol=atol | library | time (ms) | NFE | max error | peer time at neuralode's error |",
            "|---|---|---|---|---|---|",
        ]
        for row in sweep:
            at = ""
            if row["library"] == "neuralode":
                parts = []
                for lib in libs:
                    if lib == "neuralode":
                        continue
                    peer = time_at_error(sweep, lib, row["error"])
                    parts.append(
                        f"{lib}: "
                        + (
                            "outside its range"
                            if peer is None
                            else f"{peer * 1e3:.2f} ms ({peer / row['seconds']:.2f}x)"
                        )
                    )
                at = "; ".join(parts)
            out.append(
                f"| {row['tol']:g} | {row['library']} | {row['seconds'] * 1e3:.2f} | {row['nfe']:.0f} | "
                f"{row['error']:.1e} | {at} |"
            )
        out += [
            "",
            "Peer time at neuralode's error: log-log interpolation between the peer's sweep points.",
            "",
        ]

    grads = result["case3_gradients"]
    if grads:
        out += [
            f"## Case 3: gradients of case 1 (batch {grads[0]['batch']}, rtol=atol={grads[0]['tol']:g})",
            "",
        ]
        out += [
            "Loss: sum of the outputs times fixed random weights; gradient with respect to the field's "
            "parameters, relative error (2-norm) against float64 direct backprop through dopri8 at 1e-12. "
            "`-nocarry`: neuralode's adjoint with `adjoint_options={'carry_step_size': False}` (each "
            "output interval of the backward pass re-selects its initial step, as before this lever). "
            "`checkpoint`: `neuralode.odeint_checkpoint` (states stored at every step, each step replayed "
            "with autograd in the backward pass): its gradient is direct backprop's, so its error should "
            "equal the `direct` row's.",
            "",
            "| dtype | library | mode | fwd+bwd time (ms) | vs neuralode same mode | NFE fwd | NFE bwd "
            "| grad rel. error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in grads:
            base = next(
                (
                    r
                    for r in grads
                    if r["dtype"] == row["dtype"] and r["mode"] == row["mode"] and r["library"] == "neuralode"
                ),
                None,
            )
            out.append(
                f"| {row['dtype']} | {row['library']} | {row['mode']} | {row['seconds'] * 1e3:.1f} | "
                f"{ratio(base and base['seconds'], row['seconds'])} | {row['nfe_forward']:.0f} | "
                f"{row['nfe_backward']:.0f} | {row['grad_rel_error']:.1e} |"
            )
        out.append("")

    block = result["case4_block"]
    if block:
        out += [
            f"## Case 4: ODE-Net block ({cfg['block_channels']} channels, {cfg['block_size']}x"
            f"{cfg['block_size']}, GroupNorm, batch {cfg['block_batch']}, dopri5 rtol=atol=1e-3, float32)",
            "",
        ]
        out += [
            "| library | pass | time (ms) | vs neuralode same pass | NFE fwd | NFE bwd "
            "| total / time in func |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in block:
            base = next((r for r in block if r["mode"] == row["mode"] and r["library"] == "neuralode"), None)
            label = "forward" if row["mode"] == "forward" else f"forward+backward ({row['mode']})"
            out.append(
                f"| {row['library']} | {label} | {row['seconds'] * 1e3:.0f} | "
                f"{ratio(base and base['seconds'], row['seconds'])} | {row['nfe_forward']:.0f} | "
                f"{row['nfe_backward']:.0f} | {row['seconds'] / row['func_seconds']:.2f} |"
            )
        out += [
            "",
            "Time in func: wall time inside the field's calls (in the backward pass that includes only the "
            "field's forward, not its vector-Jacobian product, so the backward rows' ratio is not an "
            "overhead).",
            "",
            "torchode's adjoint rows use its JointBacksolveAdjoint (the whole batch as one problem, forward "
            "and backward, as in the two others; its per-sample BacksolveAdjoint was 5x slower "
            "than neuralode on this case in a development run); its NFE counts calls of the "
            "batched field (each call evaluates every sample, at per-sample times).",
            "",
        ]

    memory = result["case5_memory"]
    if memory:
        out += [
            "## Case 5: peak memory of forward+backward, ODE-Net block, rk4",
            "",
            "Each point in a fresh subprocess; peak RSS above the RSS just before the pass (after one "
            "warm-up pass at 1 step), reset with /proc/self/clear_refs; adjoint points are the median of "
            f"{result['config'].get('memory_repeats', 1)} fresh processes (direct and checkpoint: one). "
            "torchode has no fixed-step "
            "rk4, so it is not in this table. `checkpoint`: `neuralode.odeint_checkpoint` with a "
            "checkpoint at every step (memory: one state per step plus one step's graph).",
            "",
            "| library | mode | "
            + " | ".join(f"{s} steps (MiB)" for s in result["config"]["memory_steps"])
            + " |",
            "|---|---|" + "---|" * len(result["config"]["memory_steps"]),
        ]
        for lib in libs:
            for mode in memory_modes(lib):
                cells = [
                    next(
                        (
                            f"{r['peak_mb']:.0f}"
                            for r in memory
                            if r["library"] == lib and r["mode"] == mode and r["steps"] == s
                        ),
                        None,
                    )
                    for s in result["config"]["memory_steps"]
                ]
                if all(c is not None for c in cells):
                    out.append(f"| {lib} | {mode} | " + " | ".join(cells) + " |")
        out += ["", "![memory](bench_memory.png)", ""]

    compiled = result.get("case6_compile", [])
    if compiled:
        out += [
            "## Case 6: torch.compile on CPU",
            "",
            "Eager vs `torch.compile(..., dynamic=False)` (inductor), float32, median per call; the compile "
            "time is the first call's. The error norm is the solver's per-step arithmetic as one function; "
            "the solve compiles the user's field (case 1's MLP) and leaves the solver eager.",
            "",
            "| batch | what | eager (us) | compiled (us) | compiled / eager | compile time (s) |",
            "|---|---|---|---|---|---|",
        ]
        for row in compiled:
            eager, compiled_time = row["eager_seconds"], row["compiled_seconds"]
            out.append(
                f"| {row['batch']} | {row['what']} | {eager * 1e6:.1f} | {compiled_time * 1e6:.1f} | "
                f"{compiled_time / eager:.2f} | {row['compile_seconds']:.1f} |"
            )
        out.append("")
    path.write_text("\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------------


def config(quick: bool) -> dict:
    if quick:
        return {
            "batches": [16],
            "n_times": 3,
            "tol": 1e-4,
            "repeats": 1,
            "sweep_batch": 16,
            "sweep_tols": [1e-3, 1e-5],
            "sweep_repeats": 1,
            "grad_batch": 16,
            "grad_dtypes": [torch.float64],
            "grad_repeats": 1,
            "block_channels": 8,
            "block_size": 4,
            "block_batch": 4,
            "block_repeats": 1,
            "memory_steps": [2],
            "memory_repeats": 1,
        }
    return {
        "batches": [512, 16],
        "n_times": 10,
        "tol": 1e-6,
        "repeats": 21,
        "sweep_batch": 512,
        "sweep_tols": [1e-4, 1e-5, 1e-6, 1e-7, 1e-8],
        "sweep_repeats": 7,
        "grad_batch": 512,
        "grad_dtypes": [torch.float32, torch.float64],
        "grad_repeats": 5,
        "block_channels": 64,
        "block_size": 6,
        "block_batch": 128,
        "block_repeats": 5,
        "memory_steps": [10, 40, 160],
        "memory_repeats": 3,
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny sizes, 1 repeat)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--out-dir", default=None, help="default: results/ (runs/bench/quick with --quick)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        choices=["1", "3", "4", "5", "6"],
        help="default: all; case 2 comes with case 1; 6 (the torch.compile check, some 30 s of compiling) "
        "is left out of --quick unless named",
    )
    parser.add_argument("--note", default="", help="a line to put at the top of bench.md")
    parser.add_argument("--memory-point", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cases is None:
        args.cases = ["1", "3", "4", "5"] if args.quick else ["1", "3", "4", "5", "6"]
    torch.set_num_threads(args.threads)
    if args.memory_point:
        lib, mode, steps, channels, size, batch = args.memory_point
        print(json.dumps(memory_point(lib, mode, int(steps), int(channels), int(size), int(batch))))
        return

    start = time.perf_counter()
    load_before = load_average()
    commit = git_commit(ROOT)  # now: the run rewrites the tracked results/bench.*, which would read as -dirty
    libs, missing = available_libraries(args.libraries)
    if "neuralode" not in libs:
        parser.error("--libraries must include neuralode (ratios are relative to it)")
    for name, why in missing.items():
        print(f"leaving out {name}: {why}", flush=True)
    cfg = config(args.quick)
    out_dir = (
        Path(args.out_dir) if args.out_dir else (ROOT / ("runs/bench/quick" if args.quick else "results"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    result = {
        "case1_forward": [],
        "case1_sweep": [],
        "case3_gradients": [],
        "case4_block": [],
        "case5_memory": [],
        "case6_compile": [],
    }
    case_seconds = {}
    clock = time.perf_counter()
    if "1" in args.cases:
        result["case1_forward"] = case_forward(libs, cfg)
        result["case1_sweep"] = case_sweep(libs, cfg)
        case_seconds["1"], clock = time.perf_counter() - clock, time.perf_counter()
    if "3" in args.cases:
        result["case3_gradients"] = case_gradients(libs, cfg)
        case_seconds["3"], clock = time.perf_counter() - clock, time.perf_counter()
    if "4" in args.cases:
        result["case4_block"] = case_block(libs, cfg)
        case_seconds["4"], clock = time.perf_counter() - clock, time.perf_counter()
    if "5" in args.cases:
        result["case5_memory"] = case_memory(libs, cfg, args.threads)
        plot_memory(result["case5_memory"], out_dir / "bench_memory.png")
        case_seconds["5"], clock = time.perf_counter() - clock, time.perf_counter()
    if "6" in args.cases:
        result["case6_compile"] = case_compile(cfg)
        case_seconds["6"] = time.perf_counter() - clock

    result["config"] = {
        k: ([str(v).replace("torch.", "") for v in vals] if k == "grad_dtypes" else vals)
        for k, vals in cfg.items()
    }
    result["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}",
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "libraries": libs,
        "missing": missing,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            **{lib: library_version(lib) for lib in libs},
        },
        "load_before": load_before,
        "load_after": load_average(),
        "shared": load_before != "unknown" and float(load_before.split()[0]) >= 1.0,
        "total_seconds": time.perf_counter() - start,
        "case_seconds": {k: round(v, 1) for k, v in case_seconds.items()},
        "note": args.note,
    }
    (out_dir / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_markdown(result, out_dir / "bench.md")
    print(f"wrote {out_dir / 'bench.md'}, {out_dir / 'bench.json'} ({result['meta']['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
