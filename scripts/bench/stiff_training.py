"""Case 10 (issue 22): training a stiff neural ODE with dopri5 and with kvaerno5, same start and data.

Design. A neural ODE whose field is stiff from the first iteration on, so the comparison measures the
solvers and not whether training happens to drift into stiffness: a grey-box Robertson field,
mass-action kinetics with learned log-rates (started at the true rates times (2, 0.5, 2)) plus a
tanh-MLP correction 3-width-3 on the scaled state (y2 scaled by 1e4; the MLP's last layer is
started small), fitted to Robertson trajectories from ``batch`` initial states (SciPy Radau at
rtol 1e-10) at ``n_times`` log-spaced times in (0, t_end]. With rates near the true ones the Jacobian
has an eigenvalue near -(1e4 y3 + 6e7 y2), some -2e3 and more, against the slow dynamics' 0.04:
dopri5's steps are bounded by its stability region, kvaerno5's (L-stable) by accuracy only.

Both runs: the same initial parameters, data and Adam (lr 3e-3), rtol 1e-5 / atol 1e-9 (y2 is about
3e-5), float64, loss the mean squared error of the state scaled by each component's spread in the data;
gradients by direct backprop through the solver (``odeint`` with autograd: the backward pass replays
the recorded graph and calls the field no more, so backward NFE is 0; the Jacobians of kvaerno5's
Newton iterations are taken without a graph). The two methods' iterations are interleaved (one
iteration each in turn) so that a loaded machine slows both alike. NFE: every call of the field in the
forward pass (kvaerno5's Jacobian evaluations included).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from .harness import Timed
from .stiff_problems import _robertson_jac, _robertson_np

F64 = torch.float64
TRUE_LOG_RATES = (np.log(0.04), np.log(1e4), np.log(3e7))
START_FACTORS = (2.0, 0.5, 2.0)
SCALE = (1.0, 1e4, 1.0)  # the state as the MLP sees it


class GreyBoxRobertson(nn.Module):
    """Robertson's mass-action kinetics with learned log-rates, plus a small tanh-MLP correction."""

    def __init__(self, width: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        start = [r + np.log(f) for r, f in zip(TRUE_LOG_RATES, START_FACTORS, strict=True)]
        self.log_rates = nn.Parameter(torch.tensor(start, dtype=F64))
        self.w1 = nn.Parameter(torch.randn(3, width, generator=generator, dtype=F64) / 3**0.5)
        self.b1 = nn.Parameter(torch.zeros(width, dtype=F64))
        self.w2 = nn.Parameter(1e-3 * torch.randn(width, 3, generator=generator, dtype=F64) / width**0.5)
        self.register_buffer("scale", torch.tensor(SCALE, dtype=F64))

    def forward(self, t, y):
        k1, k2, k3 = self.log_rates.exp().unbind(0)
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        kinetics = torch.stack([-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2**2, k3 * y2**2], -1)
        return kinetics + torch.tanh((y * self.scale) @ self.w1 + self.b1) @ self.w2


def _data(cfg: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial states (batch, 3), times (n_times + 1,) from 0 and the trajectories (n_times + 1, batch, 3)."""
    from scipy.integrate import solve_ivp

    batch, t_end, n = cfg["batch"], cfg["t_end"], cfg["n_times"]
    times = np.concatenate([[0.0], t_end * np.logspace(-3, 0, n)])
    times[-1] = t_end  # logspace may round past it
    y3 = np.linspace(0.0, 0.3, batch)
    y0 = np.stack([1.0 - y3, np.zeros(batch), y3], axis=1)
    trajectories = []
    for row in y0:
        sol = solve_ivp(_robertson_np, (0.0, t_end), row, method="Radau", jac=_robertson_jac, rtol=1e-10,
                        atol=1e-16, t_eval=times)  # fmt: skip
        trajectories.append(sol.y.T)
    ys = torch.tensor(np.stack(trajectories, axis=1), dtype=F64)
    return torch.tensor(y0, dtype=F64), torch.tensor(times, dtype=F64), ys


def case_stiff_training(cfg: dict) -> list[dict]:
    """Case 10's rows: per method, NFE and seconds per iteration and the losses."""
    import neuralode as nd

    settings = cfg["stiff_training"]
    y0, times, data = _data(settings)
    spread = data.reshape(-1, 3).std(0) + 1e-12
    runs = {}
    for method in ("dopri5", "kvaerno5"):
        field = Timed(GreyBoxRobertson(settings["width"]))
        runs[method] = {"field": field, "optimizer": torch.optim.Adam(field.parameters(), lr=3e-3),
                        "nfe": [], "steps": [], "seconds": [], "losses": [], "failed": ""}  # fmt: skip
    for _ in range(settings["iterations"]):
        for method, run in runs.items():
            if run["failed"]:
                continue
            field, optimizer = run["field"], run["optimizer"]
            field.reset()
            stats = nd.SolveStats()
            start = time.perf_counter()
            try:
                ys = nd.odeint(field, y0, times, method=method, rtol=1e-5, atol=1e-9, stats=stats,
                               options={"max_num_steps": 1_000_000})  # fmt: skip
            except nd.SolverError as error:  # the row says so; the other method trains on
                run["failed"] = f"iteration {len(run['losses']) + 1}: {str(error)[:120]}"
                continue
            loss = (((ys - data) / spread) ** 2).mean()
            nfe_forward = field.calls
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run["seconds"].append(time.perf_counter() - start)
            run["nfe"].append((nfe_forward, field.calls - nfe_forward))
            run["steps"].append(stats.forward.n_steps)
            run["losses"].append(loss.item())
    rows = []
    for method, run in runs.items():
        if not run["losses"]:
            raise RuntimeError(f"case 10: {method} failed at its first iteration: {run['failed']}")
        rates = run["field"].field.log_rates.detach().exp().tolist()
        rows.append({
            "method": method, "gradient": "direct backprop", "iterations": settings["iterations"],
            "batch": settings["batch"], "width": settings["width"], "t_end": settings["t_end"],
            "nfe_forward": statistics.mean(f for f, _ in run["nfe"]),
            "nfe_backward": statistics.mean(b for _, b in run["nfe"]),
            "steps": statistics.mean(run["steps"]),
            "seconds_per_iteration": statistics.median(run["seconds"]),
            "initial_loss": run["losses"][0], "final_loss": run["losses"][-1], "rates": rates,
            "completed": len(run["losses"]), "failed": run["failed"],
        })  # fmt: skip
        r = rows[-1]
        print(f"case 10 {method}: NFE/iter {r['nfe_forward']:.0f}, {r['seconds_per_iteration']:.3f} s/iter, "
              f"loss {r['initial_loss']:.3e} -> {r['final_loss']:.3e}", flush=True)  # fmt: skip
    return rows


def training_target_rows(rows: list[dict], targets: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's training goal: dopri5 takes ``nfe_ratio`` times kvaerno5's NFE per iteration or more."""
    goal = targets.get("stiff_training")
    ours = next((r for r in rows if r["method"] == "kvaerno5"), None)
    peer = next((r for r in rows if r["method"] == "dopri5"), None)
    if not goal or not ours or not peer:
        return []
    nfe = peer["nfe_forward"] / ours["nfe_forward"]
    seconds = peer["seconds_per_iteration"] / ours["seconds_per_iteration"]
    return [(
        f"case 10 (issue 22): training a stiff neural ODE, dopri5 takes >= {goal['nfe_ratio']:g}x "
        "kvaerno5's evaluations per iteration",
        f"{nfe:.1f}x NFE ({peer['nfe_forward']:.0f} vs {ours['nfe_forward']:.0f}), {seconds:.1f}x seconds "
        "per iteration",
        nfe >= goal["nfe_ratio"],
    )]  # fmt: skip


def training_lines(rows: list[dict]) -> list[str]:
    """Case 10's table."""
    if not rows:
        return []
    r0 = rows[0]
    out = [
        "## Case 10: training a stiff neural ODE (issue 22)",
        "",
        f"Grey-box Robertson field (learned log-rates started at the true rates x {START_FACTORS}, plus a "
        f"tanh-MLP 3-{r0['width']}-3 correction), {r0['batch']} trajectories to t = {r0['t_end']:g}, "
        f"{r0['iterations']} Adam iterations from the same start, rtol 1e-5 / atol 1e-9, float64, "
        "gradients by direct backprop (the backward pass calls the field no more: backward NFE 0). "
        "NFE and steps: mean per iteration; time: median per iteration (forward, backward and the "
        "optimizer step); iterations of the two methods interleaved.",
        "",
        "| method | gradient | NFE fwd / iter | NFE bwd / iter | steps / iter | s / iter | initial loss | "
        "final loss | iterations | learned rates |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rates = ", ".join(f"{k:.3g}" for k in r["rates"])
        out.append(
            f"| {r['method']} | {r['gradient']} | {r['nfe_forward']:.0f} | {r['nfe_backward']:.0f} | "
            f"{r['steps']:.0f} | {r['seconds_per_iteration']:.3f} | {r['initial_loss']:.3e} | "
            f"{r['final_loss']:.3e} | {r['completed']}{' (' + r['failed'] + ')' if r['failed'] else ''} | "
            f"{rates} |"
        )
    return [*out, "", "True rates: 0.04, 1e4, 3e7.", ""]
