"""Write Table 2 (latent ODE vs RNN, predictive RMSE on spirals) from finished runs, beside the paper's.

Reads ``runs/latent_ode/<profile>/<net>/n<count>/default/result.json`` for both nets and every observation
count, and writes ``<out>/table2.md`` and ``<out>/table2.csv`` (``results/`` for quick,
``results/<profile>/`` otherwise).

    .venv/bin/python scripts/make_table2.py --profile quick [--out results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from neuralode.training import atomic_write_text, write_csv

ROOT = Path(__file__).resolve().parents[1]
COUNTS = (30, 50, 100)
NETS = ("rnn", "latent_ode")
GRADIENTS = {
    "direct": "backpropagation through the solver",
    "adjoint": "the adjoint method",
    "checkpoint": "backpropagation through the solver from checkpoints",
}
PAPER = {  # Chen et al. (2018), Table 2: predictive RMSE on 100 points past the observed window
    "rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813},
    "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346},
}


def load_results(runs: Path, counts: tuple[int, ...] = COUNTS) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (net, count) run's result.json; a missing one is an error naming the command that makes it."""
    results = {}
    for net in NETS:
        for count in counts:
            path = runs / net / f"n{count}" / "default" / "result.json"
            if not path.exists():
                raise SystemExit(f"{path} is missing: run `python -m experiments.latent_ode net={net} "
                                 f"num_observed={count} profile={runs.name}` (or `make table2`)")  # fmt: skip
            results[net, count] = json.loads(path.read_text())
    return results


def table_rows(results: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per observation count: our RMSE (true and noisy targets) and the paper's, per net."""
    counts = sorted({count for _, count in results})
    rows = []
    for count in counts:
        rnn, latent = results["rnn", count], results["latent_ode", count]
        rows.append({
            "observations": f"{count}/100",
            "rnn_rmse": round(rnn["final"]["test_rmse_extrapolation"], 4),
            "latent_ode_rmse": round(latent["final"]["test_rmse_extrapolation"], 4),
            "rnn_rmse_noisy": round(rnn["final"]["test_rmse_extrapolation_noisy"], 4),
            "latent_ode_rmse_noisy": round(latent["final"]["test_rmse_extrapolation_noisy"], 4),
            "latent_ode_rmse_window": round(latent["final"]["test_rmse_window"], 4),
            "rnn_seconds_per_iteration": round(rnn["mean_seconds_per_iteration"], 4),
            "latent_ode_seconds_per_iteration": round(latent["mean_seconds_per_iteration"], 4),
            "latent_ode_nfe_forward": round(latent["final"]["train_nfe_forward"], 1),
            "paper_rnn_rmse": PAPER["rnn"].get(count, "-"),
            "paper_latent_ode_rmse": PAPER["latent_ode"].get(count, "-"),
        })  # fmt: skip
    return rows


def _settings_text(results: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """How the data, the latent ODE and the RNN were set up, from the runs' resolved configs."""
    latent, rnn = results["latent_ode", 100], results["rnn", 100]
    cfg = latent["config"]
    data, model, solver = cfg["data"], cfg["latent_ode"], cfg["solver"]
    gradient = GRADIENTS[solver["gradient"]]
    bptt = rnn["config"]["rnn"]["bptt"]
    detail = {
        "truncated": f" (tau {bptt['tau']})",
        "randomized": f" (keep probability {bptt['keep_probability']})",
    }
    strategy = detail.get(bptt["strategy"], "")
    low, high = cfg["latent_ode"]["train_prefix"]
    rnn_low, rnn_high = rnn["config"]["rnn"]["train_prefix"]
    latent_training = (
        "The latent ODE maximises the ELBO of the observations of the whole window."
        if low == 1.0
        else f"Each batch, the latent ODE's encoder reads a random share in [{low}, {high}] of the window "
        "and the ELBO scores the whole window (a lower bound on log p(x) all the same)."
    )
    rnn_training = (
        "teacher forcing on the whole window"
        if rnn_low == 1.0
        else f"reading a random share in [{rnn_low}, {rnn_high}] of the window and running free on the rest"
    )
    return [
        f"**Data (ours; the paper gives no formula, noise or sizes).** {data['num_spirals']} Archimedean "
        f"spirals r = {data['radius_start']} + {data['radius_growth']} theta / 2 pi, theta = t in "
        f"[0, 2 pi x {data['turns']}], on {data['num_dense']} dense points, alternately counter-clockwise "
        f"and clockwise (the mirror image), Gaussian noise std {data['noise_std']}. A series is a window of "
        f"{data['window']} dense points from a random start, of which N are observed (drawn without "
        f"replacement: irregular times), followed by the {data['extrapolate']} points to predict. "
        f"{round(100 * data['test_fraction'])}% of the spirals are held out. Generated by "
        f"`neuralode.data.spirals` from seed {data['seed']}.",
        "",
        f"**Latent ODE.** Latent dim {model['latent_dim']}; encoder: a {model['encoder_cell'].upper()} with "
        f"{model['encoder_hidden']} units run backwards over the observations and their time gaps; dynamics: "
        f"one hidden layer of {model['dynamics_hidden']} units (ELU); decoder: one hidden layer of "
        f"{model['decoder_hidden']} ({model.get('decoder_activation', 'relu').upper()}). "
        f"{solver['method']} at rtol {solver['rtol']}, atol {solver['atol']} "
        f"(paper: 1.5e-8); gradients by {gradient}. The prediction decodes the posterior mean.",
        "",
        f"**RNN baseline.** A {rnn['config']['rnn']['cell'].upper()} with {rnn['config']['rnn']['hidden']} "
        "units reads (x, time gap) and predicts the change of x at the next time; it extrapolates by feeding "
        f"its predictions back. Trained by {rnn_training}, with **{bptt['strategy']}** backpropagation "
        f"through time{strategy}.",
        "",
        f"**Training, both nets.** Adam lr {cfg['optimizer']['lr']} (x{cfg['schedule']['gamma']} at "
        f"{cfg['schedule']['milestones']} of the run), batch {cfg['batch_size']}, {latent['epochs']} epochs "
        f"of {latent['batches_per_epoch']} steps. " + latent_training,
    ]


def markdown(rows: list[dict[str, Any]], results: dict[tuple[str, int], dict[str, Any]]) -> str:
    """The table with everything a reader needs to know about how it was made."""
    latent = results["latent_ode", 100]
    n_test = round(latent["config"]["data"]["num_spirals"] * latent["config"]["data"]["test_fraction"])
    noisy = ", ".join(
        f"{r['observations']}: RNN {r['rnn_rmse_noisy']:.4f}, latent ODE {r['latent_ode_rmse_noisy']:.4f}"
        for r in rows
    )
    window = ", ".join(f"{r['observations']}: {r['latent_ode_rmse_window']:.4f}" for r in rows)
    lines = [
        "# Table 2: latent ODE vs RNN, predictive RMSE on spirals",
        "",
        f"Profile **{latent['profile']}**, device {latent['device']}, seed {latent['seed']}, "
        f"commit `{latent['commit']}`, trained {latent['date']}. "
        f"Made by `make table2 PROFILE={latent['profile']}`.",
        "",
        "| observations | RNN (ours) | Latent ODE (ours) | RNN (paper) | Latent ODE (paper) |",
        "|---|---|---|---|---|",
        *(
            f"| {r['observations']} | {r['rnn_rmse']:.4f} | {r['latent_ode_rmse']:.4f} | "
            f"{r['paper_rnn_rmse']} | {r['paper_latent_ode_rmse']} |"
            for r in rows
        ),
        "",
        "**Metric.** RMSE between the prediction and the true (noise-free) spiral at the "
        f"{latent['config']['data']['extrapolate']} grid times after the observed window, over {n_test} "
        f"held-out spirals never trained on. Against the noisy observations instead: {noisy}. The latent "
        f"ODE's reconstruction RMSE inside the window: {window}.",
        "",
        *_settings_text(results),
        "",
        "The paper's columns are copied from its Table 2. Its data, noise and training length are unknown, "
        "so the ordering, not the values, is what compares. Each cell is one training run with one seed; "
        "no error bars over seeds.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "latent_ode")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/ (quick) or results/<profile>/"
    )
    args = parser.parse_args()
    out = args.out or (ROOT / "results" if args.profile == "quick" else ROOT / "results" / args.profile)
    results = load_results(args.runs / args.profile)
    rows = table_rows(results)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "table2.csv", rows)
    atomic_write_text(out / "table2.md", markdown(rows, results))
    print(markdown(rows, results))


if __name__ == "__main__":
    main()
