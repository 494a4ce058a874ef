"""Cost of one CNF pass as the dimension grows: exact trace (d autograd passes) vs Hutchinson's estimator.

For each dimension d in the profile's ``cnf.trace_cost.dims``, a CNF with an MLP field (64 hidden units)
integrates a batch over [0, 1] with fixed-step RK4 (4 steps, 16 evaluations, so both trace methods do the
same number of evaluations) and the adjoint method; we time the forward pass and forward + backward
(median of ``repeats`` after a warm-up). Writes ``runs/cnf/<profile>/trace_cost.json`` (``--runs`` moves it).

    python scripts/measure_cnf_trace.py --profile quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from neuralode import Adjoint, SolverConfig
from neuralode.flows import CNF, ConcatMLPField
from neuralode.training import atomic_write_json, resolve_device, run_metadata, seed_everything

REPO = Path(__file__).resolve().parents[1]
SOLVER = SolverConfig(method="rk4", options={"step_size": 0.25}, gradient=Adjoint())  # 4 steps over [0, 1]


def time_pass(flow: CNF, x: torch.Tensor, backward: bool, repeats: int) -> float:
    """Median seconds of log_prob (and its backward pass when ``backward``), after one warm-up."""
    times = []
    for i in range(repeats + 1):
        flow.zero_grad(set_to_none=True)
        start = time.perf_counter()
        logp = flow.log_prob(x)
        if backward:
            (-logp.mean()).backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(dims: list[int], batch_size: int, repeats: int, device: torch.device) -> list[dict]:
    """One row per (dimension, trace method)."""
    rows = []
    for dim in dims:
        for trace in ("exact", "hutchinson"):
            seed_everything(0)
            flow = CNF(ConcatMLPField(dim, hidden=64), dim, trace=trace, solver=SOLVER).to(device)
            x = torch.randn(batch_size, dim, device=device)
            forward = time_pass(flow, x, backward=False, repeats=repeats)
            both = time_pass(flow, x, backward=True, repeats=repeats)
            rows.append(
                {
                    "dim": dim,
                    "trace": trace,
                    "forward_s": forward,
                    "forward_backward_s": both,
                    "nfe_forward": flow.last_stats.nfe_forward,
                    "nfe_backward": flow.last_stats.nfe_backward,
                }
            )
            print(
                f"d={dim:4d} {trace:10s} forward {forward * 1e3:8.1f} ms, "
                f"forward+backward {both * 1e3:8.1f} ms",
                flush=True,
            )
    return rows


def main() -> None:
    """Measure at the profile's settings and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--runs", default=str(REPO / "runs" / "cnf"), help="writes <runs>/<profile>/trace_cost.json"
    )
    args = parser.parse_args()
    profile = OmegaConf.load(REPO / "configs" / "profile" / f"{args.profile}.yaml")
    settings = profile.cnf.trace_cost
    device = resolve_device(args.device)
    rows = measure(list(settings.dims), int(settings.batch_size), int(settings.repeats), device)
    out = Path(args.runs) / args.profile / "trace_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out,
        {
            "rows": rows,
            "batch_size": settings.batch_size,
            "repeats": settings.repeats,
            "profile": args.profile,
            "solver": "rk4, step 0.25 over [0, 1], adjoint",
            "field": "ConcatMLPField(hidden=64, layers=2)",
            **run_metadata(device, 0),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
