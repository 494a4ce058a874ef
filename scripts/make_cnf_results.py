"""Write the Section 4 results (Figures 4-6 of the paper) from finished CNF runs.

Reads ``runs/cnf/<profile>/{density,mle}/<target>/<flow>-<size>-<trace>/default/`` (result.json and
plot_data.pt, written by ``python -m experiments.cnf``) and ``runs/cnf/<profile>/trace_cost.json``
(scripts/measure_cnf_trace.py), and writes to ``<out>`` (the profile's ``cnf.out_dir``):
``cnf_density.{md,csv,png}`` (Figure 4), ``cnf_mle.{md,csv}``, ``cnf_samples.png`` and the animations
``cnf_circles.gif``, ``cnf_moons.gif`` (Figure 5),
``cnf_trace.{md,csv}`` (exact trace vs Hutchinson).

    .venv/bin/python scripts/make_cnf_results.py --profile quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import pickle
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf

from neuralode.flows import energy
from neuralode.training import atomic_write_text, write_csv
from neuralode.training.checkpoint import refusal_reason
from neuralode.training.reproducibility import git_commit

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("u1", "u2", "u3", "u4")
DATASETS = ("circles", "moons")
SIZES = (2, 8, 32)
PAPER_NOTE = (
    "**The paper's values.** Section 4 of Chen et al. (2018) reports its results as figures only "
    "(Figures 4-6), with no numbers, so there is no paper column of numbers to set beside ours."
)


def run_dir(runs: Path, task: str, target: str, flow: str, size: int, trace: str = "auto") -> Path:
    """The default run folder of one setting."""
    return runs / task / target / f"{flow}-{size}-{trace}" / "default"


def load(path: Path, command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result.json, plot_data.pt) of a run; a missing run is an error naming the command that makes it."""
    if not (path / "result.json").exists():
        raise SystemExit(f"{path}/result.json is missing: run `{command}` (or `make cnf`)")
    result = json.loads((path / "result.json").read_text())
    plot_path = path / "plot_data.pt"
    return result, load_plot_data(plot_path, command) if plot_path.exists() else {}


def load_plot_data(path: Path, command: str) -> dict[str, Any]:
    """A run's plot_data.pt, read with ``weights_only=True``: tensors and plain values only, so a crafted
    file cannot run code; anything else (or a damaged file) is refused with the command that rewrites it."""
    fix = f"delete it and run `{command}` to write it again"
    try:
        plot = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise SystemExit(
            f"{path} holds objects other than tensors and plain values; refused, nothing in it was run "
            f"({refusal_reason(error)}). If you did not craft it, {fix}"
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise SystemExit(f"{path} is damaged ({type(error).__name__}: {error}); {fix}") from error
    if not isinstance(plot, dict):
        raise SystemExit(f"{path} holds a {type(plot).__name__}, not the dict experiments.cnf writes; {fix}")
    return plot


def provenance(results: list[dict[str, Any]], profile: str) -> list[str]:
    """The header lines every results file carries."""

    def values(key: str) -> str:
        return ", ".join(sorted({str(r.get(key)) for r in results}))

    iterations = ", ".join(sorted({f"{r['flow']} {r['iterations']}" for r in results}))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    dates = sorted(str(r.get("date")) for r in results)
    return [
        f"- Profile: `{profile}`; iterations: {iterations}; seed: {values('seed')}",
        f"- Device: {values('device')}",
        f"- Runs trained {dates[0]} to {dates[-1]} at commit {values('commit')}; this file written {now} at "
        f"commit {git_commit(ROOT)}",
    ]


def density(runs: Path, out: Path, profile: str) -> None:
    """Figure 4: KL(q || p) per target and setting, the table and the grid of pictures."""
    rows, results, plots = [], [], {}
    for target in TARGETS:
        for flow in ("planar", "cnf"):
            for size in SIZES:
                cmd = (
                    f"python -m experiments.cnf task=density target={target} flow={flow} size={size} "
                    f"profile={profile}"
                )
                result, plot = load(run_dir(runs, "density", target, flow, size), cmd)
                final = result["final"]
                results.append(result)
                plots[target, flow, size] = plot
                rows.append(
                    {
                        "target": target,
                        "flow": flow,
                        "size": size,
                        "kl": final["kl"],
                        "kl_stderr": final["kl_stderr"],
                        "iterations": result["iterations"],
                        "seconds_per_iteration": result["mean_seconds_per_iteration"],
                        "train_nfe_forward": final["train_nfe_forward"],
                        "parameters": result["parameters"],
                    }
                )
    write_csv(out / "cnf_density.csv", rows)
    kl = {(r["target"], r["flow"], r["size"]): r for r in rows}
    lines = [
        "# Density matching (Figure 4): planar NF vs CNF, KL(q || p)",
        "",
        f"Made by `make cnf PROFILE={profile}` (scripts/make_cnf_results.py) from "
        f"runs/cnf/{profile}/density/.",
        *provenance(results, profile),
        "",
        "Each flow maps base samples z ~ N(0, I) to x and is trained to minimise KL(q || p) = E_q[log "
        "q(x) + U(x)] + log Z with fresh base samples every iteration. The targets p = exp(-U)/Z are the"
        " energies U1-U4 of Rezende & Mohamed (2015), the source of the paper's planar-flow baseline "
        "(the paper does not name its targets); U2-U4 get soft walls beyond |z1| = 4 so that they are "
        "normalisable, and log Z is computed on a grid, so the KL below is absolute (0 = perfect). "
        "Estimated on fixed base samples after the last iteration, +- one standard error."
        " Planar NF: K layers, RMSprop; CNF: the paper's hypernetwork CNF with M units, Adam, dopri5 "
        "with the adjoint.",
        "",
        "| target | planar K=2 | planar K=8 | planar K=32 | CNF M=2 | CNF M=8 | CNF M=32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        cells = [
            f"{kl[target, f, s]['kl']:.3f} +- {kl[target, f, s]['kl_stderr']:.3f}"
            for f in ("planar", "cnf")
            for s in SIZES
        ]
        lines.append(f"| {target.upper()} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| flow | iterations | seconds/iteration (mean over targets and sizes) |",
        "|---|---|---|",
    ]
    for flow in ("planar", "cnf"):
        sel = [r for r in rows if r["flow"] == flow]
        mean_seconds = sum(r["seconds_per_iteration"] for r in sel) / len(sel)
        lines.append(f"| {flow} | {sel[0]['iterations']} | {mean_seconds:.4f} |")
    lines += [
        "",
        PAPER_NOTE
        + " What its Figure 4 shows: with K = M, the CNF fits the targets better than the planar NF "
        "(lower loss at every K/M), after 10,000 Adam iterations for the CNF and 500,000 RMSprop iterations "
        "for the NF (our `paper` profile).",
        "",
        "Figure: `cnf_density.png` (target, planar NF and CNF samples per K/M, KL against K/M).",
    ]
    atomic_write_text(out / "cnf_density.md", "\n".join(lines) + "\n")

    fig, axes = plt.subplots(len(TARGETS), 8, figsize=(20, 2.6 * len(TARGETS)))
    limit = 4.0
    axis = torch.linspace(-limit, limit, 200, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    for i, target in enumerate(TARGETS):
        dens = torch.exp(-energy(target)(grid)).reshape(200, 200)
        axes[i, 0].imshow(
            dens.T.numpy(), origin="lower", extent=(-limit, limit, -limit, limit), cmap="viridis"
        )
        axes[i, 0].set_ylabel(target.upper())
        for j, (flow, size) in enumerate([(f, s) for f in ("planar", "cnf") for s in SIZES]):
            samples = plots[target, flow, size]["samples"]
            ax = axes[i, j + 1]
            ax.hist2d(
                samples[:, 0].numpy(),
                samples[:, 1].numpy(),
                bins=100,
                range=[[-limit, limit], [-limit, limit]],
                cmap="viridis",
            )
            if i == 0:
                ax.set_title(f"{'NF K' if flow == 'planar' else 'CNF M'}={size}")
        axes[0, 0].set_title("target exp(-U)")
        for ax in axes[i, :7]:
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[i, 7]
        for flow, label in (("planar", "planar NF (K)"), ("cnf", "CNF (M)")):
            ax.plot(SIZES, [kl[target, flow, s]["kl"] for s in SIZES], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(SIZES, [str(s) for s in SIZES])
        ax.set_ylabel("KL(q || p)")
        if i == 0:
            ax.set_title("loss vs K/M")
            ax.legend(fontsize=8)
    fig.suptitle(f"Density matching (Figure 4 setting), profile {profile}")
    fig.tight_layout()
    fig.savefig(out / "cnf_density.png", dpi=80)
    plt.close(fig)


def mle(runs: Path, out: Path, profile: str) -> None:
    """Figure 5: held-out NLL on two circles and two moons, densities and the flow of base samples over t."""
    rows, results, plots = [], [], {}
    for target in DATASETS:
        for flow in ("planar", "cnf"):
            cmd = f"python -m experiments.cnf task=mle target={target} flow={flow} size=64 profile={profile}"
            result, plot = load(run_dir(runs, "mle", target, flow, 64), cmd)
            results.append(result)
            plots[target, flow] = plot
            final = result["final"]
            rows.append(
                {
                    "dataset": target,
                    "flow": flow,
                    "size": 64,
                    "test_nll": final["test_nll"],
                    "test_nll_stderr": final["test_nll_stderr"],
                    "iterations": result["iterations"],
                    "seconds_per_iteration": result["mean_seconds_per_iteration"],
                    "train_nfe_forward": final["train_nfe_forward"],
                    "parameters": result["parameters"],
                }
            )
    write_csv(out / "cnf_mle.csv", rows)
    lines = [
        "# Maximum likelihood on samples (Figure 5): held-out negative log-likelihood",
        "",
        f"Made by `make cnf PROFILE={profile}` (scripts/make_cnf_results.py) from runs/cnf/{profile}/mle/.",
        *provenance(results, profile),
        "",
        "Trained on fresh samples every iteration; NLL in nats per point on held-out samples (a fixed set, "
        "another seed), +- one standard error. CNF: the paper's hypernetwork CNF with 64 units, Adam, dopri5 "
        "at rtol = atol = 1e-5 (the paper's tolerance) with the adjoint; planar NF: 64 one-unit layers, "
        "RMSprop, log p(x) through its normalizing direction x -> z.",
        "",
        "| dataset | flow | test NLL (nats) | iterations | seconds/iteration | forward NFE (last epoch) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        nfe = f"{r['train_nfe_forward']:.1f}" if r["flow"] == "cnf" else "- (no solver)"
        lines.append(
            f"| {r['dataset']} | {'CNF M=64' if r['flow'] == 'cnf' else 'planar NF K=64'} | "
            f"{r['test_nll']:.3f} +- {r['test_nll_stderr']:.3f} | {r['iterations']} | "
            f"{r['seconds_per_iteration']:.4f} | {nfe} |"
        )
    lines += [
        "",
        PAPER_NOTE + " Its Figure 5 shows the CNF's density and samples matching both datasets "
        "closely and the planar NF's less so.",
        "",
        "Figures: `cnf_samples.png` (data, densities, base samples carried by the CNF from t = 0 to t1), "
        "and the same as animations, `cnf_circles.gif` and `cnf_moons.gif`.",
    ]
    atomic_write_text(out / "cnf_mle.md", "\n".join(lines) + "\n")

    n_snap = len(plots[DATASETS[0], "cnf"]["snapshot_times"])
    fig, axes = plt.subplots(len(DATASETS), 3 + n_snap, figsize=(2.4 * (3 + n_snap), 2.6 * len(DATASETS)))
    for i, target in enumerate(DATASETS):
        cnf, planar = plots[target, "cnf"], plots[target, "planar"]
        limit = cnf["limit"]
        box = (-limit, limit, -limit, limit)
        data = cnf["data"]
        axes[i, 0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.5)
        axes[i, 0].set_ylabel(target)
        for j, (plot, name) in enumerate(((planar, "planar NF density"), (cnf, "CNF density"))):
            axes[i, j + 1].imshow(
                plot["grid_logp"].exp().T.numpy(), origin="lower", extent=box, cmap="viridis"
            )
            if i == 0:
                axes[i, j + 1].set_title(name)
        colours = cnf["snapshots"][0, :, 0]
        for k, t in enumerate(cnf["snapshot_times"].tolist()):
            z = cnf["snapshots"][k]
            axes[i, 3 + k].scatter(z[:, 0], z[:, 1], s=1, c=colours, cmap="coolwarm")
            if i == 0:
                axes[i, 3 + k].set_title(f"CNF t={t:.2f}")
        if i == 0:
            axes[i, 0].set_title("data")
        for ax in axes[i]:
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
    fig.suptitle(
        f"Maximum likelihood (Figure 5 setting), profile {profile}: base samples (t=0) to data (t=1)"
    )
    fig.tight_layout()
    fig.savefig(out / "cnf_samples.png", dpi=80)
    plt.close(fig)
    for target in DATASETS:
        if "frames" in plots[target, "cnf"]:
            animate(plots[target, "cnf"], out / f"cnf_{target}.gif")


def animate(plot: dict[str, Any], path: Path) -> None:
    """An animated GIF of base samples carried by the CNF from t = 0 to t1 (Figure 5's option)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    frames, times, limit = plot["frames"], plot["frame_times"].tolist(), plot["limit"]
    colours = frames[0, :, 0]
    fig, ax = plt.subplots(figsize=(3.2, 3.2))

    def draw(k: int) -> None:
        ax.clear()
        ax.scatter(frames[k][:, 0], frames[k][:, 1], s=1, c=colours, cmap="coolwarm")
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{plot['target']}: CNF, t = {times[k]:.2f}")

    animation = FuncAnimation(fig, draw, frames=len(times))
    animation.save(path, writer=PillowWriter(fps=10), dpi=60)
    plt.close(fig)


def trace(runs: Path, out: Path, profile: str) -> None:
    """Exact trace vs Hutchinson: the same 2-D run both ways, and the cost of one pass against d."""
    rows, results = [], []
    for method in ("exact", "hutchinson"):
        cmd = (
            f"python -m experiments.cnf task=mle target=moons flow=mlp size=64 trace={method} "
            f"profile={profile}"
        )
        result, _ = load(run_dir(runs, "mle", "moons", "mlp", 64, method), cmd)
        results.append(result)
        final = result["final"]
        rows.append(
            {
                "trace": method,
                "test_nll": final["test_nll"],
                "test_nll_stderr": final["test_nll_stderr"],
                "final_train_loss": final["train_loss"],
                "iterations": result["iterations"],
                "seconds_per_iteration": result["mean_seconds_per_iteration"],
                "train_nfe_forward": final["train_nfe_forward"],
                "train_nfe_backward": final["train_nfe_backward"],
            }
        )
    cost_path = runs / "trace_cost.json"
    if not cost_path.exists():
        raise SystemExit(
            f"{cost_path} is missing: run `python scripts/measure_cnf_trace.py --profile {profile}`"
        )
    cost = json.loads(cost_path.read_text())
    write_csv(
        out / "cnf_trace.csv",
        [{"part": "run", **r} for r in rows] + [{"part": "cost", **r} for r in cost["rows"]],
    )
    lines = [
        "# Exact trace vs Hutchinson's estimator",
        "",
        f"Made by `make cnf PROFILE={profile}` (scripts/make_cnf_results.py, scripts/measure_cnf_trace.py).",
        *provenance(results, profile),
        f"- Cost measurement: {cost['device']}, {cost['date']}, commit {cost['commit']}",
        "",
        "## The same 2-D run both ways",
        "",
        "Two moons, a general CNF (f = MLP([z, t]), 2 hidden layers of 64, tanh), Adam, dopri5 at rtol ="
        " atol = 1e-5 with the adjoint; the trace during training is exact (2 autograd passes per "
        "evaluation) or Hutchinson's (one vector-Jacobian product, Gaussian noise drawn once per solve)."
        " Held-out NLL is computed with the exact trace for both.",
        "",
        "| trace in training | test NLL (nats) | last-epoch train loss | iterations | seconds/iteration "
        "| NFE forward / backward |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trace']} | {r['test_nll']:.3f} +- {r['test_nll_stderr']:.3f} | "
            f"{r['final_train_loss']:.3f} | {r['iterations']} | {r['seconds_per_iteration']:.4f} | "
            f"{r['train_nfe_forward']:.1f} / {r['train_nfe_backward']:.1f} |"
        )
    lines += [
        "",
        "## Cost of one pass against the dimension",
        "",
        f"{cost['field']} on R^d, {cost['solver']}, batch {cost['batch_size']}, median of {cost['repeats']} "
        "after a warm-up. Same number of function evaluations for both; the exact trace needs d autograd "
        "passes per evaluation, Hutchinson's one.",
        "",
        "| d | exact forward (ms) | Hutchinson forward (ms) | ratio | exact fwd+bwd (ms) "
        "| Hutchinson fwd+bwd (ms) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["dim"], r["trace"]): r for r in cost["rows"]}
    for dim in sorted({r["dim"] for r in cost["rows"]}):
        e, h = by[dim, "exact"], by[dim, "hutchinson"]
        lines.append(
            f"| {dim} | {1e3 * e['forward_s']:.1f} | {1e3 * h['forward_s']:.1f} | "
            f"{e['forward_s'] / h['forward_s']:.1f} | {1e3 * e['forward_backward_s']:.1f} | "
            f"{1e3 * h['forward_backward_s']:.1f} | {e['forward_backward_s'] / h['forward_backward_s']:.1f} |"
        )
    lines += [
        "",
        "**The paper's values.** Hutchinson's estimator is not in Chen et al. (2018); it is the "
        "extension of FFJORD (Grathwohl et al., 2019), which reports no numbers in this form either.",
    ]
    atomic_write_text(out / "cnf_trace.md", "\n".join(lines) + "\n")


def main() -> None:
    """Build every CNF results file of the profile."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "cnf"))
    parser.add_argument("--out", default=None, help="default: the profile's cnf.out_dir")
    args = parser.parse_args()
    runs = Path(args.runs) / args.profile
    profile = OmegaConf.load(ROOT / "configs" / "profile" / f"{args.profile}.yaml")
    out = Path(args.out) if args.out else ROOT / profile.cnf.out_dir
    out.mkdir(parents=True, exist_ok=True)
    density(runs, out, args.profile)
    mle(runs, out, args.profile)
    trace(runs, out, args.profile)
    print(f"wrote {out}/cnf_density.*, cnf_mle.*, cnf_samples.png, cnf_*.gif, cnf_trace.*")


if __name__ == "__main__":
    main()
