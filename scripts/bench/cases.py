"""The timed cases, each a function of the libraries and the config returning its result rows:
1-2 (dopri5 forward of the tanh-MLP, overhead, tolerance sweep), 3 (gradients), 4 (ODE-Net block),
6 (torch.compile on CPU). Case 5, memory, runs in fresh processes (memory.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

import neuralode

from .adapters import CHECKPOINT_MODES, MODES, NOCARRY_MODES, SOLVE
from .bare_loop import BARE, bare_dopri5
from .harness import Timed, round_robin
from .problems import (
    block_input,
    flat_grad,
    gradient_problem,
    gradient_reference,
    make_block_field,
    make_mlp,
    max_error,
    mlp_problem,
    mlp_reference,
)

# ----------------------------------------------------------------------------------------------------
# Cases 1-2: MLP forward, overhead, tolerance sweep


def forward_job(lib: str, field: Timed, y0: Tensor, t: Tensor, tol: float, reference: Tensor):
    def job() -> dict:
        field.reset()
        start = time.perf_counter()
        with torch.no_grad():
            if lib == BARE:
                ys = bare_dopri5(field, y0, t, tol, tol)
            else:
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
            timed = [*libs, BARE] if "neuralode" in libs else libs
            fields = {lib: Timed(make_mlp(dtype)) for lib in timed}
            jobs = {lib: forward_job(lib, fields[lib], y0, t, cfg["tol"], reference) for lib in timed}
            result = round_robin(jobs, cfg["repeats"])
            for lib in timed:
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
                    for lib in timed
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


# ----------------------------------------------------------------------------------------------------
# Case 3: gradients


def gradient_job(
    lib: str,
    mode: str,
    field: Timed,
    y0: Tensor,
    t: Tensor,
    tol: float,
    loss: Callable[[Tensor], Tensor],
    reference: Tensor,
) -> Callable[[], dict]:
    """One timed forward+backward of ``loss(ys)``: seconds, NFE of each pass, and the parameter
    gradient's relative 2-norm error against ``reference`` (cases 3 and 7)."""

    def job() -> dict:
        field.zero_grad(set_to_none=True)
        field.reset()
        start = time.perf_counter()
        ys = SOLVE[lib](field, y0, t, tol, tol, mode)
        nfe_forward = field.calls
        loss(ys).backward()
        seconds = time.perf_counter() - start
        grad = flat_grad(field)
        return {
            "seconds": seconds,
            "nfe_forward": nfe_forward,
            "nfe_backward": field.calls - nfe_forward,
            "grad_rel_error": ((grad - reference).norm() / reference.norm()).item(),
        }

    return job


def case_gradients(libs: list[str], cfg: dict) -> list[dict]:
    rows = []
    batch = cfg["grad_batch"]
    reference = gradient_reference(batch, cfg["n_times"])
    for dtype in cfg["grad_dtypes"]:
        y0, t, weights = gradient_problem(batch, dtype, cfg["n_times"])
        jobs = {}
        for lib in libs:
            for mode in MODES[lib] + (NOCARRY_MODES + CHECKPOINT_MODES if lib == "neuralode" else ()):
                loss = lambda ys, weights=weights: (ys * weights).sum()  # noqa: E731
                jobs[(lib, mode)] = gradient_job(
                    lib, mode, Timed(make_mlp(dtype)), y0, t, cfg["tol"], loss, reference
                )
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
