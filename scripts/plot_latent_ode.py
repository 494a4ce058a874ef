"""Figures of the latent ODE experiment from finished runs (the paper's Figure 8, and the Poisson intensity).

- ``latent_extrapolation.png``: held-out spirals reconstructed and extrapolated by the RNN and the latent ODE
  (true trajectory, observations, prediction).
- ``latent_trajectories.png``: the first two latent dimensions of held-out spirals, coloured by direction.
- ``latent_poisson.png`` (when the event-rate run exists): the inferred intensity lambda(z(t)) against the
  true one, with the events.

    .venv/bin/python scripts/plot_latent_ode.py --profile quick --observed 30 [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the neuralode package, when run as a script
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from neuralode.tasks import model_from_settings, predict, rmse, series_from_settings  # noqa: E402
from neuralode.training import load_checkpoint  # noqa: E402


def load_run(run_dir: Path):
    """(config, trained model, provenance) of a finished run, on the CPU."""
    if not (run_dir / "result.json").exists():
        raise SystemExit(f"{run_dir} has no finished run: train it first (`make table2`)")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = model_from_settings(cfg)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location="cpu")["model"])
    model.eval()
    return cfg, model, json.loads((run_dir / "result.json").read_text())


def caption(result: dict) -> str:
    return (
        f"profile {result['profile']}, {result['device']}, seed {result['seed']}, commit {result['commit']}"
    )


def save(fig, path: Path) -> None:
    """Write the figure atomically (a crash leaves no half-written PNG)."""
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)
    print(f"wrote {path}")


def plot_extrapolation(runs: Path, observed: int, out: Path, examples: int = 4) -> None:
    cpu = torch.device("cpu")
    rows = [("rnn", "RNN"), ("latent_ode", "Latent ODE")]
    fig, axes = plt.subplots(
        len(rows), examples, figsize=(3.2 * examples, 6.4), squeeze=False, sharex="col", sharey="col"
    )
    for r, (net, label) in enumerate(rows):
        cfg, model, result = load_run(runs / net / f"n{observed}" / "default")
        _, test = series_from_settings(cfg, cpu)
        predicted, reconstructions, _ = predict(model, test)
        window = test.spirals.window
        for k in range(examples):
            ax = axes[r, k]
            truth = test.spirals.truth[k]
            x, _ = test.observed(slice(k, k + 1))
            ax.plot(*truth.T, color="0.6", lw=1, label="true trajectory")
            ax.plot(*x[0].T, ".", color="tab:blue", ms=3, label="observations")
            if reconstructions is not None:
                ax.plot(*reconstructions[k].T, "--", color="tab:red", lw=1, label="reconstruction")
            ax.plot(*predicted[k].T, color="tab:red", lw=1.5, label="extrapolation")
            err = rmse(predicted[k], truth[window:])
            direction = "clockwise" if test.spirals.clockwise[k] else "counter-clockwise"
            ax.set_title(f"{label}: {direction}\nRMSE {err:.3f}", fontsize=9)
            ax.tick_params(labelsize=7)
        if r == 0:
            axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Held-out spirals, {observed}/100 observations ({caption(result)})", fontsize=9)
    save(fig, out / "latent_extrapolation.png")


def plot_latent_paths(runs: Path, observed: int, out: Path, count: int = 60) -> None:
    cfg, model, result = load_run(runs / "latent_ode" / f"n{observed}" / "default")
    _, test = series_from_settings(cfg, torch.device("cpu"))
    _, _, path = predict(model, test)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k in range(min(count, len(test.spirals))):
        clockwise = bool(test.spirals.clockwise[k])
        ax.plot(path[:, k, 0], path[:, k, 1], color="tab:blue" if clockwise else "tab:red", lw=0.7, alpha=0.7)
    ax.plot([], [], color="tab:blue", label="clockwise")
    ax.plot([], [], color="tab:red", label="counter-clockwise")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.legend(fontsize=8)
    ax.set_title(f"Latent trajectories, held-out spirals\n{caption(result)}", fontsize=8)
    save(fig, out / "latent_trajectories.png")


def plot_poisson(run_dir: Path, out: Path, examples: int = 3) -> None:
    cfg, model, result = load_run(run_dir)
    _, test = series_from_settings(cfg, torch.device("cpu"))
    _, _, path = predict(model, test)
    inferred = model.intensity(path)
    times, window = test.spirals.times, test.spirals.window
    error_in = rmse(inferred[:, :window], test.intensity[:, :window])
    error_out = rmse(inferred[:, window:], test.intensity[:, window:])
    fig, axes = plt.subplots(examples, 1, figsize=(7, 2.2 * examples), sharex=True)
    for k, ax in enumerate(axes):
        ax.plot(times, test.intensity[k], color="0.4", label="true intensity")
        ax.plot(times, inferred[k], color="tab:red", label="inferred lambda(z(t))")
        event_times = times[:window][test.events[k] > 0]
        ax.plot(event_times, torch.zeros_like(event_times), "|", color="k", ms=12, label="events")
        ax.axvline(times[window - 1], color="0.7", ls=":")
        ax.set_ylabel("intensity")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("time (events observed left of the dotted line)")
    fig.suptitle(
        f"Poisson process latent ODE, held-out series: intensity RMSE {error_in:.2f} inside the window, "
        f"{error_out:.2f} after it (peak rate {cfg.data.events.peak_rate:g})\n{caption(result)}",
        fontsize=8,
    )
    print(f"intensity RMSE on held-out series: {error_in:.3f} inside the window, {error_out:.3f} after it")
    save(fig, out / "latent_poisson.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--observed", type=int, default=30, help="which observation count to draw")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "latent_ode")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/ (quick) or results/<profile>/"
    )
    args = parser.parse_args()
    out = args.out or (ROOT / "results" if args.profile == "quick" else ROOT / "results" / args.profile)
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs / args.profile
    plot_extrapolation(runs, args.observed, out)
    plot_latent_paths(runs, args.observed, out)
    poisson = runs / "latent_ode" / "n100" / "latent_ode.event_rate=true"
    if (poisson / "result.json").exists():
        plot_poisson(poisson, out)


if __name__ == "__main__":
    main()
