"""Write Figure 3 (NFE statistics of the MNIST ODE-Net) from the points experiments/nfe_stats.py measured.

Reads the point files ``runs/nfe_stats/<profile>/points/rtol=*.json`` (one per tolerance, from single runs
and multiruns alike) and draws the points of the newest point's setup (same model, method, batches and
reference): four panels ``figure3.png``, the rows ``figure3.csv`` and a summary ``figure3.md`` in ``<out>``
(``results/`` for quick, ``results/<profile>/`` otherwise). Panel (d) is read from the MNIST run's logs.

    .venv/bin/python scripts/make_figure3.py --profile quick [--points DIR] [--out results]
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from neuralode.analysis import SweepPoint, fit_ratio, read_training_nfe, running_mean
from neuralode.training import atomic_write_bytes, atomic_write_text, write_csv

ROOT = Path(__file__).resolve().parents[1]
SETUP = ("model", "method", "batch_size", "batches", "reference_rtol")  # points drawn together share these


def load_points(points_dir: Path) -> list[dict[str, Any]]:
    """The points of the newest point's setup (see the module docstring); none is an error naming the fix."""
    paths = sorted(points_dir.glob("rtol=*.json"), key=lambda path: path.stat().st_mtime)
    if not paths:
        raise SystemExit(f"no points in {points_dir}: run `python -m experiments.nfe_stats checkpoint=...` "
                         "(or `make figure3`) first")  # fmt: skip
    points = [json.loads(path.read_text()) for path in paths]
    newest = points[-1]
    return [point for point in points if all(point[key] == newest[key] for key in SETUP)]


def write_figure3(
    rows: Sequence[Mapping[str, float]],
    training: Mapping[str, list[float]],
    batches_per_epoch: int | None,
    metadata: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
) -> dict[str, float]:
    """Write ``figure3.png``, ``figure3.csv`` and ``figure3.md`` to ``out_dir``; returns the fitted ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda row: -row["rtol"])
    forward = [row["nfe_forward"] for row in rows]
    ratio = fit_ratio(forward, [row["nfe_backward"] for row in rows])
    ratio_semi = fit_ratio(forward, [row["nfe_backward_seminorm"] for row in rows])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    (a, b), (c, d) = axes
    a.loglog(forward, [row["relative_error"] for row in rows], "o-")
    for row in rows:
        a.annotate(f"{row['rtol']:.0e}", (row["nfe_forward"], row["relative_error"]), fontsize=7)
    a.set(xlabel="forward NFE", ylabel="relative error of ODE block output", title="(a) error vs forward NFE")
    b.plot(forward, [row["forward_seconds"] for row in rows], "o-")
    b.set(xlabel="forward NFE", ylabel="forward time per batch (s, median)", title="(b) time vs forward NFE")
    c.plot(
        forward, [row["nfe_backward"] for row in rows], "o", label=f"adjoint, default norm (fit {ratio:.2f}x)"
    )
    c.plot(forward, [row["nfe_backward_seminorm"] for row in rows], "s",
           label=f"adjoint, seminorm (fit {ratio_semi:.2f}x)")  # fmt: skip
    top = max(forward)
    c.plot([0, top], [0, ratio * top], "-", color="C0", alpha=0.5)
    c.plot([0, top], [0, ratio_semi * top], "-", color="C1", alpha=0.5)
    c.plot([0, top], [0, 0.5 * top], "k--", alpha=0.4, label="paper's observation: about 0.5x")
    c.set(xlabel="forward NFE", ylabel="backward NFE", title="(c) backward vs forward NFE")
    c.legend(fontsize=7)
    if training["iteration"] and batches_per_epoch:
        epochs = [step / batches_per_epoch for step in training["iteration"]]
        d.plot(epochs, training["iteration_nfe"], ".", alpha=0.15, markersize=2, label="per iteration")
        d.plot(epochs, running_mean(training["iteration_nfe"], 50), "-", label="running mean (50)")
    if training["epoch"]:
        d.plot(
            training["epoch"], training["epoch_nfe"], "o", color="k", label="epoch mean (at the epoch's end)"
        )
    d.set(xlabel="training epoch", ylabel="forward NFE", title="(d) forward NFE over training")
    if training["epoch"] or training["iteration"]:
        d.legend(fontsize=7)
    else:
        d.text(0.5, 0.5, "no training log (untrained model)", ha="center", va="center", transform=d.transAxes)
    title = (
        f"Figure 3 reproduction ({metadata['profile']} profile, {metadata['device']}, {metadata['commit']})"
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / "figure3.png", buffer.getvalue())

    columns = [field.name for field in fields(SweepPoint)]
    write_csv(out / "figure3.csv", [{key: row[key] for key in columns} for row in rows])
    lines = [
        f"# Figure 3: NFE statistics of the MNIST ODE-Net ({metadata['profile']} profile)",
        "",
        f"Made by `make figure3 PROFILE={metadata['profile']}` (experiments/nfe_stats.py measures, "
        f"scripts/make_figure3.py draws) on "
        f"{metadata['device']}, {metadata['date']}, commit {metadata['commit']}, seed {metadata['seed']}.",
        f"Model: {metadata['model']}. Solver {metadata['method']}, rtol = atol swept; error against a "
        f"float64 solve at rtol = atol = {metadata['reference_rtol']:g}; {metadata['batches']} batches of "
        f"{metadata['batch_size']} test images; time = median of {metadata['repeats']} repeats after a "
        "warm-up.",
        "",
        f"**Backward/forward NFE ratio (least-squares fit through the origin): {ratio:.2f} with the default "
        f"norm, {ratio_semi:.2f} with the seminorm.** The paper observes about 0.5. Forward NFE across the "
        f"sweep: {min(forward):g} to {max(forward):g}.",
        "",
        "| rtol | forward NFE | backward NFE (default) | backward NFE (seminorm) | relative error | "
        "forward s / batch | test error |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rtol']:.0e} | {row['nfe_forward']:.1f} | {row['nfe_backward']:.1f} | "
            f"{row['nfe_backward_seminorm']:.1f} | {row['relative_error']:.2e} | "
            f"{row['forward_seconds']:.4f} | {100 * row['test_error']:.2f}% |"
        )
    lines += [
        "",
        f"Panel (d) is read from the MNIST run's logs ({metadata['mnist_run']}), not recomputed.",
        "",
    ]
    atomic_write_text(out / "figure3.md", "\n".join(lines))
    return {"ratio_default": ratio, "ratio_seminorm": ratio_semi}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--points", default=None, help="default: runs/nfe_stats/<profile>/points")
    parser.add_argument("--out", default=None, help="default: results/ (quick), results/<profile>/ (others)")
    args = parser.parse_args()
    points_dir = Path(args.points) if args.points else ROOT / "runs" / "nfe_stats" / args.profile / "points"
    points = load_points(points_dir)
    metadata = points[-1]
    empty: dict[str, list[float]] = {"epoch": [], "epoch_nfe": [], "iteration": [], "iteration_nfe": []}
    training = read_training_nfe(metadata["mnist_run"]) if metadata["mnist_run"] else empty
    out = Path(args.out) if args.out else ROOT / "results" / ("" if args.profile == "quick" else args.profile)
    ratios = write_figure3(points, training, metadata["batches_per_epoch"], metadata, out)
    print(f"backward/forward NFE ratio: {ratios['ratio_default']:.2f} (default norm), "
          f"{ratios['ratio_seminorm']:.2f} (seminorm) over {len(points)} tolerances -> {out}")  # fmt: skip


if __name__ == "__main__":
    main()
