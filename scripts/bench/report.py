"""What a run writes: bench.json (every row and the run's metadata), bench.md (the targets, then one
table per case) and bench_memory.png (case 5)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from .adapters import memory_modes
from .adjoint_cases import paired_log_ratio
from .bare_loop import BARE
from .large_stiff import large_stiff_lines
from .per_sample_cases import per_sample_lines
from .stiff_cases import stiff_lines
from .stiff_problems import log_interpolate
from .stiff_training import training_lines
from .targets import summary_lines


def write_results(result: dict, out_dir: Path) -> None:
    """bench.json and bench.md in ``out_dir`` (the figure is written by ``plot_memory``, with case 5)."""
    (out_dir / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_markdown(result, out_dir / "bench.md")


def ratio(a: float | None, b: float | None) -> str:
    """b / a as "1.23x", "-" when either is missing."""
    return "-" if a is None or b is None or a == 0 else f"{b / a:.2f}x"


def time_at_error(rows: list[dict], lib: str, error: float) -> float | None:
    """Time of ``lib`` at the given error, interpolated log-log between its sweep points (None outside)."""
    return log_interpolate([(r["error"], r["seconds"]) for r in rows if r["library"] == lib], error)


def plot_memory(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for lib, marker in (("neuralode", "o"), ("torchdiffeq", "s")):
        for mode, style in (("direct", "-"), ("adjoint", "--"), ("checkpoint", ":")):
            points = sorted(
                (r["steps"], r["peak_mb"]) for r in rows if r["library"] == lib and r["mode"] == mode
            )
            if points:
                steps, peaks = zip(*points, strict=True)
                ax.plot(steps, [max(p, 1.0) for p in peaks], style, marker=marker, label=f"{lib} {mode}")
    ax.set_xlabel("rk4 steps")
    ax.set_ylabel("peak RSS of forward+backward (MiB)")
    ax.set_xscale("log")
    ax.set_yscale("log")  # peaks are clamped to >= 1 MiB for the log axis (the table has the values)
    ax.set_title("ODE-Net block, batch 128: memory vs steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Report


def write_markdown(result: dict, path: Path) -> None:
    meta = result["meta"]
    libs = meta["libraries"]
    cases = meta.get("cases")
    if cases and not {"1", "3", "4", "5", "7", "8"} <= set(cases):  # a subset of the cases, not make bench
        out = [f"# Performance benchmark, cases {', '.join(cases)} only (`{meta.get('command')}`)", ""]
    else:
        out = ["# Performance benchmark (`make bench`)", ""]
    if meta["quick"]:
        out += ["**Smoke run (`--quick`): tiny sizes and one repeat; these numbers mean nothing.**", ""]
    out += [
        f"- date: {meta['date']}; commit: {meta['commit']}",
        f"- machine: {meta['machine']}; torch threads: {meta['threads']} (set with `--threads`)",
        f"- load average before the run: {meta['load_before']}; after: {meta['load_after']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- libraries left out: {meta['missing'] or 'none'}",
        f"- total benchmark time: {meta['total_seconds']:.0f} s (per case: "
        + ", ".join(f"{k}: {v:.0f} s" for k, v in meta["case_seconds"].items())
        + ")",
        "",
        "Times are medians over round-robin interleaved repeats in one process; ratios are peer time / "
        "neuralode time (> 1 means neuralode is faster). NFE is counted by the same wrapper around the "
        "field for every library; error is the max abs error over all outputs against a float64 "
        "dopri8 solve at rtol=atol=1e-12. torchode controls the error of each sample separately "
        "(per-sample step sizes); neuralode and torchdiffeq control the whole batch with one step size.",
        "",
    ]
    if meta.get("shared"):
        out += [
            f"**The machine was shared with other jobs during this run** (1-minute load average "
            f"{meta['load_before'].split()[0]} before it started, on {os.cpu_count()} logical CPUs): "
            "absolute times are inflated and noisy; the interleaved medians and ratios are what to read, and "
            "even they move by some 10-30% between runs.",
            "",
        ]
    if meta.get("note"):
        out += [meta["note"], ""]

    out += summary_lines(result)
    forward = result["case1_forward"]
    cfg = result["config"]
    out += [
        f"## Case 1-2: dopri5 forward, tanh-MLP (dim 2, hidden 64), rtol=atol={cfg['tol']:g}, "
        f"{cfg['n_times']} output times",
        "",
    ]
    out += [
        "| batch | dtype | library | time (ms) | vs neuralode | NFE | max error | overhead (total/func) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in forward:
        base = next(
            r
            for r in forward
            if r["batch"] == row["batch"] and r["dtype"] == row["dtype"] and r["library"] == "neuralode"
        )
        out.append(
            f"| {row['batch']} | {row['dtype']} | {row['library']} | {row['seconds'] * 1e3:.2f} | "
            f"{ratio(base['seconds'], row['seconds'])} | {row['nfe']:.0f} | {row['error']:.1e} | "
            f"{row['overhead_ratio']:.2f} |"
        )
    out.append("")
    if any(row["library"] == BARE for row in forward):
        out += [
            f"`{BARE}`: the same dopri5 with no engine around it (scripts/bench/bare_loop.py: no argument "
            "checks, tuple states, statistics, callbacks, stops, events or autograd paths), taking "
            "neuralode's steps to its answer; its overhead is what a PyTorch engine written in Python spends "
            "beyond func on this field at the least (a time tensor, the stage input, the call and the "
            "stored stage per evaluation; the error norm and controller per step).",
            "",
        ]

    sweep = result["case1_sweep"]
    if sweep:
        out += [f"### Tolerance sweep (batch {sweep[0]['batch']}, float64)", ""]
        out += [
            "| rtol=atol | library | time (ms) | NFE | max error | peer time at neuralode's error |",
            "|---|---|---|---|---|---|",
        ]
        for row in sweep:
            at = ""
            if row["library"] == "neuralode":
                parts = []
                for lib in libs:
                    if lib == "neuralode":
                        continue
                    peer = time_at_error(sweep, lib, row["error"])
                    parts.append(
                        f"{lib}: "
                        + (
                            "outside its range"
                            if peer is None
                            else f"{peer * 1e3:.2f} ms ({peer / row['seconds']:.2f}x)"
                        )
                    )
                at = "; ".join(parts)
            out.append(
                f"| {row['tol']:g} | {row['library']} | {row['seconds'] * 1e3:.2f} | {row['nfe']:.0f} | "
                f"{row['error']:.1e} | {at} |"
            )
        out += [
            "",
            "Peer time at neuralode's error: log-log interpolation between the peer's sweep points.",
            "",
        ]

    grads = result["case3_gradients"]
    if grads:
        out += [
            f"## Case 3: gradients of case 1 (batch {grads[0]['batch']}, rtol=atol={grads[0]['tol']:g})",
            "",
        ]
        out += [
            "Loss: sum of the outputs times fixed random weights; gradient with respect to the field's "
            "parameters, relative error (2-norm) against float64 direct backprop through dopri8 at 1e-12. "
            "`-nocarry`: neuralode's adjoint with `adjoint_options={'carry_step_size': False}` (each "
            "output interval of the backward pass re-selects its initial step, as before this lever). "
            "`checkpoint`: `neuralode.odeint_checkpoint` (states stored at every step, each step replayed "
            "with autograd in the backward pass): its gradient is direct backprop's, so its error should "
            "equal the `direct` row's.",
            "",
            "| dtype | library | mode | fwd+bwd time (ms) | vs neuralode same mode | NFE fwd | NFE bwd "
            "| grad rel. error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in grads:
            base = next(
                (
                    r
                    for r in grads
                    if r["dtype"] == row["dtype"] and r["mode"] == row["mode"] and r["library"] == "neuralode"
                ),
                None,
            )
            out.append(
                f"| {row['dtype']} | {row['library']} | {row['mode']} | {row['seconds'] * 1e3:.1f} | "
                f"{ratio(base and base['seconds'], row['seconds'])} | {row['nfe_forward']:.0f} | "
                f"{row['nfe_backward']:.0f} | {row['grad_rel_error']:.1e} |"
            )
        out.append("")

    block = result["case4_block"]
    if block:
        out += [
            f"## Case 4: ODE-Net block ({cfg['block_channels']} channels, {cfg['block_size']}x"
            f"{cfg['block_size']}, GroupNorm, batch {cfg['block_batch']}, dopri5 rtol=atol=1e-3, float32)",
            "",
        ]
        out += [
            "| library | pass | time (ms) | vs neuralode same pass | NFE fwd | NFE bwd "
            "| total / time in func |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in block:
            base = next((r for r in block if r["mode"] == row["mode"] and r["library"] == "neuralode"), None)
            label = "forward" if row["mode"] == "forward" else f"forward+backward ({row['mode']})"
            out.append(
                f"| {row['library']} | {label} | {row['seconds'] * 1e3:.0f} | "
                f"{ratio(base and base['seconds'], row['seconds'])} | {row['nfe_forward']:.0f} | "
                f"{row['nfe_backward']:.0f} | {row['seconds'] / row['func_seconds']:.2f} |"
            )
        out += [
            "",
            "Time in func: wall time inside the field's calls (in the backward pass that includes only the "
            "field's forward, not its vector-Jacobian product, so the backward rows' ratio is not an "
            "overhead).",
            "",
            "torchode's adjoint rows use its JointBacksolveAdjoint (the whole batch as one problem, forward "
            "and backward, as in the two others; its per-sample BacksolveAdjoint was 5x slower "
            "than neuralode on this case in a development run); its NFE counts calls of the "
            "batched field (each call evaluates every sample, at per-sample times).",
            "",
        ]

    memory = result["case5_memory"]
    if memory:
        out += [
            "## Case 5: peak memory of forward+backward, ODE-Net block, rk4",
            "",
            "Each point in a fresh subprocess; peak RSS above the RSS just before the pass (after one "
            "warm-up pass at 1 step), reset with /proc/self/clear_refs; adjoint points are the median of "
            f"{result['config'].get('memory_repeats', 1)} fresh processes (direct and checkpoint: one). "
            "torchode has no fixed-step "
            "rk4, so it is not in this table. `checkpoint`: `neuralode.odeint_checkpoint` with a "
            "checkpoint at every step (memory: one state per step plus one step's graph).",
            "",
            "| library | mode | "
            + " | ".join(f"{s} steps (MiB)" for s in result["config"]["memory_steps"])
            + " |",
            "|---|---|" + "---|" * len(result["config"]["memory_steps"]),
        ]
        for lib in libs:
            for mode in memory_modes(lib):
                cells = [
                    next(
                        (
                            f"{r['peak_mb']:.0f}"
                            for r in memory
                            if r["library"] == lib and r["mode"] == mode and r["steps"] == s
                        ),
                        None,
                    )
                    for s in result["config"]["memory_steps"]
                ]
                if all(c is not None for c in cells):
                    out.append(f"| {lib} | {mode} | " + " | ".join(cells) + " |")
        out += ["", "![memory](bench_memory.png)", ""]

    out += adjoint_lines(result.get("case7_adjoint", []))
    out += instance_lines(result.get("case7_instances", []))
    out += per_sample_lines(result.get("case8_per_sample", []))
    out += stiff_lines(result.get("case9_stiff", []), result.get("case9_sweep", []))
    out += training_lines(result.get("case10_training", []))
    out += large_stiff_lines(result.get("case11_large_stiff", []))

    compiled = result.get("case6_compile", [])
    if compiled:
        out += [
            "## Case 6: torch.compile on CPU",
            "",
            "Eager vs `torch.compile(..., dynamic=False)` (inductor), float32, median per call; the compile "
            "time is the first call's. The error norm is the solver's per-step arithmetic as one function; "
            "the solve compiles the user's field (case 1's MLP) and leaves the solver eager.",
            "",
            "| batch | what | eager (us) | compiled (us) | compiled / eager | compile time (s) |",
            "|---|---|---|---|---|---|",
        ]
        for row in compiled:
            eager, compiled_time = row["eager_seconds"], row["compiled_seconds"]
            out.append(
                f"| {row['batch']} | {row['what']} | {eager * 1e6:.1f} | {compiled_time * 1e6:.1f} | "
                f"{compiled_time / eager:.2f} | {row['compile_seconds']:.1f} |"
            )
        out.append("")
    path.write_text("\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------------


def adjoint_lines(rows: list[dict]) -> list[str]:
    """Case 7's table: per problem and library, fwd+bwd time, NFE and gradient error."""
    if not rows:
        return []
    out = [
        "## Case 7: the adjoint's defaults on one interval (issue 18)",
        "",
        "t = [0, 1], loss sum(y(1)), gradient with respect to the field's parameters; relative 2-norm error "
        "against a float64 dopri8 adjoint solve (the MLP at rtol=atol=1e-12, the block at 1e-7). Every "
        "library with its default adjoint settings; neuralode's `seminorm` row sets "
        '`adjoint_options={"norm": "seminorm"}`. torchode: JointBacksolveAdjoint.',
        "",
        "| problem | dtype | library | mode | fwd+bwd (ms) | vs neuralode adjoint | NFE fwd | NFE bwd "
        "| grad rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(
            (r for r in rows if r["problem"] == row["problem"] and r["library"] == "neuralode"
             and r["mode"] == "adjoint"),
            None,
        )  # fmt: skip
        out.append(
            f"| {row['problem']} | {row['dtype']} | {row['library']} | {row['mode']} | "
            f"{row['seconds'] * 1e3:.1f} | {ratio(base and base['seconds'], row['seconds'])} | "
            f"{row['nfe_forward']:.0f} | {row['nfe_backward']:.0f} | {row['grad_rel_error']:.1e} |"
        )
    return [*out, ""]


def instance_lines(rows: list[dict]) -> list[str]:
    """Case 7's block over random instances: per library and mode the median backward NFE, the
    geometric mean of the gradient error and the paired log-ratio to torchode's error."""
    if not rows:
        return []
    seeds = sorted({r["seed"] for r in rows})
    out = [
        f"### The block's gradient error over {len(seeds)} random instances (batch {rows[0]['batch']})",
        "",
        "Each instance draws the field's weights and the input from its own seed; reference: float64 "
        "dopri8 adjoint. One instance's error moves by tens of percent with the accepted step sequence "
        "(the main rows above are one instance), so equal or lower error is judged here: the paired "
        "ratio to torchode's error is exp(mean of log(error / torchode's error)) over the instances, "
        "x/ is one standard error of that mean, as a factor.",
        "",
        "| library | mode | median NFE bwd | geometric mean error | vs torchode (paired) "
        "| lower than torchode in |",
        "|---|---|---|---|---|---|",
    ]
    for lib, mode in dict.fromkeys((r["library"], r["mode"]) for r in rows):
        mine = [r for r in rows if r["library"] == lib and r["mode"] == mode]
        nfe = statistics.median(r["nfe_backward"] for r in mine)
        geo = math.exp(sum(math.log(r["grad_rel_error"]) for r in mine) / len(mine))
        paired = paired_log_ratio(rows, lib, mode) if lib != "torchode" else None
        vs = "-" if paired is None else f"{math.exp(paired[0]):.2f} (x/ {math.exp(paired[1]):.2f})"
        peer = {r["seed"]: r["grad_rel_error"] for r in rows if r["library"] == "torchode"}
        wins = sum(r["grad_rel_error"] <= peer[r["seed"]] for r in mine if r["seed"] in peer)
        won = "-" if lib == "torchode" or not peer else f"{wins} of {len(mine)}"
        out.append(f"| {lib} | {mode} | {nfe:.0f} | {geo:.2e} | {vs} | {won} |")
    return [*out, ""]
