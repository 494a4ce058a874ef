"""Case 7 (issue 18): the adjoint with its default settings on one interval t = [0, 1], loss sum(y(1)):
fwd+bwd time, NFE and the gradient's relative 2-norm error for the three libraries, on the tanh-MLP
(batch 512, float64, dopri5 rtol=atol=1e-6) and the ODE-Net block (batch 128, float32, dopri5 1e-3)."""

from __future__ import annotations

import torch
from torch import Tensor

from .cases import gradient_job
from .harness import Timed, round_robin
from .problems import ConvODEFunc, block_input, flat_grad, make_block_field, make_mlp

# neuralode's rows: its defaults, and the seminorm as the one alternative a user sets by name
MODES = {"neuralode": ("adjoint", "seminorm"), "torchdiffeq": ("adjoint",), "torchode": ("adjoint",)}


def problems(cfg: dict) -> dict[str, dict]:
    """The two problems: how to build the field in a dtype, y0, the tolerance and the dtype solved in."""
    mlp_y0 = torch.randn(
        cfg["adjoint_mlp_batch"], 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    channels, size = cfg["block_channels"], cfg["block_size"]
    return {
        "mlp": {"field": make_mlp, "y0": mlp_y0, "tol": 1e-6, "dtype": torch.float64, "flat": None},
        "block": {
            "field": lambda dtype: make_block_field(channels).to(dtype),
            "y0": block_input(cfg["block_batch"], channels, size),
            "tol": 1e-3,
            "dtype": torch.float32,
            "flat": (channels, size, size),
        },
    }


def reference_gradient(problem: dict, rtol: float) -> Tensor:
    """The parameter gradient in float64 by neuralode's adjoint with dopri8 at ``rtol`` = ``atol``."""
    import neuralode

    field = problem["field"](torch.float64)
    y0, t = problem["y0"].double(), torch.tensor([0.0, 1.0], dtype=torch.float64)
    neuralode.odeint_adjoint(field, y0, t, rtol=rtol, atol=rtol, method="dopri8")[-1].sum().backward()
    return flat_grad(field)


def _final_sum(ys: Tensor) -> Tensor:
    """The loss of case 7: sum(y(1))."""
    return ys[-1].sum()


def case_adjoint(libs: list[str], cfg: dict) -> list[dict]:
    rows = []
    for name, problem in problems(cfg).items():
        reference = reference_gradient(problem, cfg["adjoint_reference_rtol"][name])
        dtype, tol = problem["dtype"], problem["tol"]
        y0, t = problem["y0"].to(dtype), torch.tensor([0.0, 1.0], dtype=dtype)
        jobs = {}
        for lib in libs:
            for mode in MODES[lib]:
                field = Timed(problem["field"](dtype), problem["flat"] if lib == "torchode" else None)
                jobs[(lib, mode)] = gradient_job(lib, mode, field, y0, t, tol, _final_sum, reference)
        for (lib, mode), summary in round_robin(jobs, cfg["adjoint_repeats"][name]).items():
            rows.append({"problem": name, "dtype": str(dtype).replace("torch.", ""), "tol": tol,
                         "library": lib, "mode": mode, **summary})  # fmt: skip
        print(f"case 7 {name} done", flush=True)
    return rows


def case_adjoint_instances(libs: list[str], cfg: dict) -> list[dict]:
    """The block's gradient error over several random instances (field weights and input drawn per
    seed, batch ``adjoint_instances["batch"]``): one instance's error moves by tens of percent with the
    accepted step sequence, so "equal or lower error" is judged on the set. NFE and error per instance,
    no timing (case 7's main rows time the issue's instance)."""
    settings = cfg["adjoint_instances"]
    channels, size, batch = cfg["block_channels"], cfg["block_size"], settings["batch"]
    rows = []
    for seed in range(settings["seeds"]):

        def make(dtype: torch.dtype, seed: int = seed) -> torch.nn.Module:
            torch.manual_seed(100 + seed)
            return ConvODEFunc(channels).to(dtype)

        y0 = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(200 + seed))
        problem = {"field": make, "y0": y0}
        reference = reference_gradient(problem, settings["reference_rtol"])
        t = torch.tensor([0.0, 1.0])
        for lib in libs:
            for mode in MODES[lib]:
                field = Timed(make(torch.float32), (channels, size, size) if lib == "torchode" else None)
                result = gradient_job(lib, mode, field, y0, t, 1e-3, _final_sum, reference)()
                rows.append({"seed": seed, "batch": batch, "library": lib, "mode": mode,
                             "nfe_backward": result["nfe_backward"],
                             "grad_rel_error": result["grad_rel_error"]})  # fmt: skip
        print(f"case 7 block instance {seed} done", flush=True)
    return rows


def paired_log_ratio(rows: list[dict], library: str, mode: str) -> tuple[float, float, int] | None:
    """Mean and standard error of log(error / torchode's error) over the instances, and the count."""
    import math

    peer = {r["seed"]: r["grad_rel_error"] for r in rows if r["library"] == "torchode"}
    logs = [
        math.log(r["grad_rel_error"] / peer[r["seed"]])
        for r in rows
        if r["library"] == library and r["mode"] == mode and r["seed"] in peer
    ]
    if len(logs) < 2:
        return None
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    return mean, sd / math.sqrt(len(logs)), len(logs)
