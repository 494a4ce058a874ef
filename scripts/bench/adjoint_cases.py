"""Case 7 (issue 18): the adjoint with its default settings on one interval t = [0, 1], loss sum(y(1)):
fwd+bwd time, NFE and the gradient's relative 2-norm error for the three libraries, on the tanh-MLP
(batch 512, float64, dopri5 rtol=atol=1e-6) and the ODE-Net block (batch 128, float32, dopri5 1e-3)."""

from __future__ import annotations

import torch
from torch import Tensor

from .cases import gradient_job
from .harness import Timed, round_robin
from .problems import block_input, flat_grad, make_block_field, make_mlp

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
