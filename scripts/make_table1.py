"""Write Table 1 (MNIST test error, parameters, memory, time) from finished runs, beside the paper's values.

Reads ``runs/mnist/<profile>/<model>/default/result.json`` for the four models and the memory/time
measurement ``runs/mnist/<profile>/memory.json`` (scripts/measure_mnist_memory.py), and writes
``<out>/table1.md`` and ``<out>/table1.csv`` (``results/`` for quick, ``results/<profile>/`` otherwise).

    .venv/bin/python scripts/make_table1.py --profile quick [--out results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from neuralode.models.mnist import MODEL_NAMES
from neuralode.training import atomic_write_text, write_csv

ROOT = Path(__file__).resolve().parents[1]

PAPER = {  # Chen et al. (2018), Table 1
    "mlp": {"error": "1.60%", "params": "0.24M", "memory": "-", "time": "-"},
    "resnet": {"error": "0.41%", "params": "0.60M", "memory": "O(L)", "time": "O(L)"},
    "rknet": {"error": "0.47%", "params": "0.22M", "memory": "O(L~)", "time": "O(L~)"},
    "odenet": {"error": "0.42%", "params": "0.22M", "memory": "O(1)", "time": "O(L~)"},
}


def load_results(runs: Path) -> dict[str, dict[str, Any]]:
    """Each model's result.json; a missing one is an error naming the command that makes it."""
    results = {}
    for model in MODEL_NAMES:
        path = runs / model / "default" / "result.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `python -m experiments.mnist model={model} "
                             f"profile={runs.name}` (or `make table1 PROFILE={runs.name}`)")  # fmt: skip
        results[model] = json.loads(path.read_text())
    return results


def table_rows(results: dict[str, dict[str, Any]], memory: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model: ours (measured) and the paper's, in separate columns."""
    at_default = {row["model"]: row for row in memory["rows"] if row["rtol"] == 1e-3}
    rows = []
    for model in MODEL_NAMES:
        result, measured = results[model], at_default[model]
        final = result["final"]
        rows.append({
            "model": result["label"],
            "test_error_pct": round(100 * final["test_error"], 2),
            "parameters": result["parameters"],
            "peak_step_memory_mib": measured["peak_memory_mb"],
            "train_seconds_per_iteration": round(result["mean_seconds_per_iteration"], 4),
            "forward_nfe_last_epoch": round(final["train_nfe_forward"], 1),
            "backward_nfe_last_epoch": round(final["train_nfe_backward"], 1),
            "epochs": result["epochs"],
            "paper_test_error": PAPER[model]["error"],
            "paper_parameters": PAPER[model]["params"],
            "paper_memory": PAPER[model]["memory"],
            "paper_time": PAPER[model]["time"],
        })  # fmt: skip
    return rows


def markdown(
    rows: list[dict[str, Any]], results: dict[str, Any], memory: dict[str, Any], profile: str
) -> str:
    first = results["odenet"]
    config = first["config"]
    solvers = {m: results[m]["solver"] for m in ("odenet", "rknet")}
    solver_text = "; ".join(
        f"{results[m]['label']}: {s['method']} at rtol={s['rtol']:g}, atol={s['atol']:g}"
        + (f", gradient={s['gradient']}" if "gradient" in s else "")
        for m, s in solvers.items()
    )
    commits = sorted({r["commit"] for r in results.values()})
    milestones = "/".join(f"{100 * m:g}%" for m in first["config"]["schedule"]["milestones"])
    epochs = ", ".join(f"{r['label']} {r['epochs']}" for r in results.values())
    lines = [
        f"# Table 1: MNIST ({profile} profile)",
        "",
        f"Made by `make table1 PROFILE={profile}` (scripts/make_table1.py) from runs/mnist/{profile}/.",
        f"Device: {first['device']}. Seed {first['seed']}. Trained {first['date']} at commit "
        f"{', '.join(commits)}; table written from memory measurements of {memory['date']} "
        f"(commit {memory['commit']}).",
        f"Epochs: {epochs}; batch {config['batch_size']}, SGD momentum {config['optimizer']['momentum']}, "
        f"lr {config['optimizer']['lr']} x{config['schedule']['gamma']} at {milestones} of the run; "
        "random-crop padding "
        f"{first['config']['profile']['mnist']['crop_padding']}. Test error is the final epoch's (no "
        "checkpoint selection on the test set).",
        f"Solvers over t in [0, 1]: {solver_text}. ODE-Net trains with the adjoint method, RK-Net "
        "backpropagates through the solver's operations. "
        "The paper's own runs used an implicit Adams solver (LSODE, via SciPy) outside PyTorch.",
        "",
        "| Model | Test error (ours) | Test error (paper) | Parameters (ours) | Parameters (paper) | "
        "Peak step memory, MiB (ours) | Memory (paper) | Seconds / iteration (ours) | Time (paper) | "
        "NFE fwd/bwd (ours, last epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        backward = row["backward_nfe_last_epoch"]
        backward_text = f"{backward:g}" if backward else "- (backprop)"
        nfe = (
            "-"
            if row["forward_nfe_last_epoch"] == 0
            else f"{row['forward_nfe_last_epoch']:g} / {backward_text}"
        )
        lines.append(
            f"| {row['model']} | {row['test_error_pct']:.2f}% | {row['paper_test_error']} | "
            f"{row['parameters']:,} | {row['paper_parameters']} | {row['peak_step_memory_mib']:.0f} | "
            f"{row['paper_memory']} | {row['train_seconds_per_iteration']:.3f} | {row['paper_time']} | "
            f"{nfe} |"
        )
    lines += [
        "",
        "Peak step memory: one training step at batch 128 in a fresh process, the peak above the memory in "
        "use before it (on CPU the peak RSS, reset just before the step, so it includes allocator slack; "
        "`max_memory_allocated` on CUDA). Seconds / iteration: mean over training of forward, backward and "
        "update (batch preparation excluded). L = layers, L~ = function evaluations (the paper's notation).",
        "",
        "## Memory and time against NFE (RK-Net vs ODE-Net)",
        "",
        "One training step of each, solver tolerance varied (rtol = atol), trained weights when available. "
        "RK-Net stores every solver stage for backpropagation, so its memory grows with NFE; ODE-Net's "
        "adjoint stores only the block's input and output.",
        "",
        "| Model | rtol | Forward NFE | Backward NFE | Peak step memory, MiB | Seconds / step |",
        "|---|---|---|---|---|---|",
    ]
    sweep = sorted((r for r in memory["rows"] if r["model"] in ("rknet", "odenet")),
                   key=lambda r: (r["model"] != "rknet", -r["rtol"]))  # fmt: skip
    for row in sweep:
        backward = row["nfe_backward"] if row["model"] == "odenet" else "- (backprop)"
        label = results[row["model"]]["label"]
        lines.append(f"| {label} | {row['rtol']:g} | {row['nfe_forward']} | {backward} | "
                     f"{row['peak_memory_mb']:.0f} | {row['seconds_per_step']:.3f} |")  # fmt: skip
    lines += ["", f"Measured on {memory['device']} by scripts/measure_mnist_memory.py."]
    if not all(row.get("peak_reset", False) for row in memory["rows"]):
        lines.append(
            "Warning: the peak RSS could not be reset before some steps; their memory may be overstated."
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "mnist"))
    parser.add_argument("--out", default=None, help="default: results/ (quick), results/<profile>/ (others)")
    args = parser.parse_args()
    runs = Path(args.runs) / args.profile
    results = load_results(runs)
    memory_path = runs / "memory.json"
    if not memory_path.exists():
        raise SystemExit(
            f"{memory_path} is missing: run scripts/measure_mnist_memory.py --profile {args.profile}"
        )
    memory = json.loads(memory_path.read_text())
    rows = table_rows(results, memory)
    stem = "table1"
    out = Path(args.out) if args.out else ROOT / "results" / ("" if args.profile == "quick" else args.profile)
    write_csv(out / f"{stem}.csv", rows)
    atomic_write_text(out / f"{stem}.md", markdown(rows, results, memory, args.profile))
    print((out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
