"""Performance benchmark: neuralode vs torchdiffeq vs torchode, side by side in one process (issue 8).

Every timed case runs the libraries round-robin, interleaved over repeats, and reports the median time
of each; ratios are of medians. NFE is counted by a wrapper around the vector field (the same wrapper
for every library), which also accumulates the wall time spent inside the field, so the overhead ratio
(total time / time inside func) comes from the same calls as the totals. Errors are against a
tight-tolerance float64 reference (neuralode dopri8, rtol=atol=1e-12). Cases:

1. dopri5 forward, tanh-MLP field (dim 2, hidden 64), batch 512 and 16, float32 and float64,
   rtol=atol=1e-6, 10 output times; plus a tolerance sweep to compare at equal accuracy.
2. Solver overhead (total / time inside func) of the case-1 calls.
3. Gradients on case 1: direct backprop, adjoint, seminorm adjoint (and neuralode's checkpointed
   adjoint, odeint_checkpoint); time of forward+backward and the relative gradient error against a
   float64 direct-backprop reference.
4. ODE-Net block (ConvODEFunc, 64 channels, 6x6, GroupNorm, batch 128, dopri5 rtol=atol=1e-3,
   float32): forward, and forward+adjoint backward.
5. Peak memory of forward+backward of that block with rk4 at 10, 40, 160 steps, direct vs adjoint
   (and neuralode's checkpointed adjoint, one checkpoint per step), each point in a fresh subprocess
   (peak RSS above the RSS just before the pass).
6. torch.compile on CPU: the per-step error norm and the case-1 field, eager vs compiled (left out
   of ``--quick`` unless named).
7. The adjoint with its default settings on one interval t = [0, 1], loss sum(y(1)) (issue 18): the
   tanh-MLP at batch 512 in float64 (rtol=atol=1e-6) and the ODE-Net block at batch 128 in float32
   (1e-3): fwd+bwd time, NFE and the gradient error against a float64 dopri8 adjoint solve.
8. Per-sample solving (issue 21): 256 Van der Pol oscillators, mu over [0.1, 10], per_sample=True
   (with and without compaction) vs joint mode and torchode: steps, NFE, time and error.
9. Stiff problems (issue 22): Robertson to t=1e5 and Van der Pol mu=1000, kvaerno5/kvaerno3 vs SciPy's
   Radau, BDF, LSODA and capped dopri5; steps at equal error from an rtol sweep.
10. A stiff neural ODE (issue 22): a grey-box Robertson field trained with dopri5 and with kvaerno5 from
   the same start: NFE and seconds per iteration, final loss.
11. A stiff reaction-diffusion system up to 100,000 states (issue 22): kvaerno5 with matrix-free
   Newton-Krylov at several sizes (peak memory per state), SciPy's BDF with a sparse Jacobian and
   capped dopri5 at the largest.

torchdiffeq and torchode are optional (requirements/bench.txt); a library that is not installed is
left out and the output says so. ``--quick`` is a seconds-long smoke run with tiny sizes (its numbers
mean nothing). Run from the repository root (``make bench`` does):

    .venv/bin/python -m scripts.bench [--quick] [--threads 1] [--libraries neuralode torchdiffeq torchode]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from neuralode.training.reproducibility import git_commit

from .adapters import LIBRARIES, available_libraries, library_version
from .adjoint_cases import case_adjoint, case_adjoint_instances
from .cases import case_block, case_compile, case_forward, case_gradients, case_sweep
from .config import ROOT, config
from .harness import load_average, machine
from .large_stiff import case_large_stiff, large_stiff_point
from .memory import case_memory, memory_point
from .per_sample_cases import case_per_sample
from .report import plot_memory, write_results
from .stiff_cases import case_stiff
from .stiff_training import case_stiff_training


def main() -> None:
    """Parse the command line; run the cases asked for (or one memory point) and write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny sizes, 1 repeat)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--out-dir", default=None, help="default: results/ (runs/bench/quick with --quick)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        choices=["1", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
        help="default: all; case 2 comes with case 1; 6 (the torch.compile check, some 30 s of compiling) "
        "is left out of --quick unless named",
    )
    parser.add_argument("--note", default="", help="a line to put at the top of bench.md")
    parser.add_argument("--memory-point", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--large-stiff-point", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cases is None:
        quick_cases = ["1", "3", "4", "5", "7", "8", "9", "10", "11"]
        args.cases = quick_cases if args.quick else [*quick_cases[:4], "6", *quick_cases[4:]]
    torch.set_num_threads(args.threads)
    if args.memory_point:
        lib, mode, steps, channels, size, batch = args.memory_point
        print(json.dumps(memory_point(lib, mode, int(steps), int(channels), int(size), int(batch))))
        return
    if args.large_stiff_point:
        method, states, rtol, atol, cap, out = args.large_stiff_point
        print(json.dumps(large_stiff_point(method, int(states), float(rtol), float(atol), int(cap), out)))
        return

    start = time.perf_counter()
    load_before = load_average()
    commit = git_commit(ROOT)  # now: the run rewrites the tracked results/bench.*, which would read as -dirty
    libs, missing = available_libraries(args.libraries)
    if "neuralode" not in libs:
        parser.error("--libraries must include neuralode (ratios are relative to it)")
    for name, why in missing.items():
        print(f"leaving out {name}: {why}", flush=True)
    cfg = config(args.quick)
    out_dir = (
        Path(args.out_dir) if args.out_dir else (ROOT / ("runs/bench/quick" if args.quick else "results"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    result = {
        "case1_forward": [],
        "case1_sweep": [],
        "case3_gradients": [],
        "case4_block": [],
        "case5_memory": [],
        "case6_compile": [],
        "case7_adjoint": [],
        "case7_instances": [],
        "case8_per_sample": [],
        "case9_stiff": [],
        "case9_sweep": [],
        "case10_training": [],
        "case11_large_stiff": [],
    }
    case_seconds = {}
    clock = time.perf_counter()
    if "1" in args.cases:
        result["case1_forward"] = case_forward(libs, cfg)
        result["case1_sweep"] = case_sweep(libs, cfg)
        case_seconds["1"], clock = time.perf_counter() - clock, time.perf_counter()
    if "3" in args.cases:
        result["case3_gradients"] = case_gradients(libs, cfg)
        case_seconds["3"], clock = time.perf_counter() - clock, time.perf_counter()
    if "4" in args.cases:
        result["case4_block"] = case_block(libs, cfg)
        case_seconds["4"], clock = time.perf_counter() - clock, time.perf_counter()
    if "5" in args.cases:
        result["case5_memory"] = case_memory(libs, cfg, args.threads)
        plot_memory(result["case5_memory"], out_dir / "bench_memory.png")
        case_seconds["5"], clock = time.perf_counter() - clock, time.perf_counter()
    if "6" in args.cases:
        result["case6_compile"] = case_compile(cfg)
        case_seconds["6"], clock = time.perf_counter() - clock, time.perf_counter()
    if "7" in args.cases:
        result["case7_adjoint"] = case_adjoint(libs, cfg)
        result["case7_instances"] = case_adjoint_instances(libs, cfg)
        case_seconds["7"], clock = time.perf_counter() - clock, time.perf_counter()
    if "8" in args.cases:
        result["case8_per_sample"] = case_per_sample(libs, cfg)
        case_seconds["8"], clock = time.perf_counter() - clock, time.perf_counter()
    if "9" in args.cases:
        result["case9_stiff"], result["case9_sweep"] = case_stiff(cfg)
        case_seconds["9"], clock = time.perf_counter() - clock, time.perf_counter()
    if "10" in args.cases:
        result["case10_training"] = case_stiff_training(cfg)
        case_seconds["10"], clock = time.perf_counter() - clock, time.perf_counter()
    if "11" in args.cases:
        result["case11_large_stiff"] = case_large_stiff(cfg, args.threads)
        case_seconds["11"] = time.perf_counter() - clock

    result["config"] = {
        k: ([str(v).replace("torch.", "") for v in vals] if k == "grad_dtypes" else vals)
        for k, vals in cfg.items()
    }
    result["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "libraries": libs,
        "missing": missing,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            **{lib: library_version(lib) for lib in libs},
        },
        "load_before": load_before,
        "load_after": load_average(),
        "shared": load_before != "unknown" and float(load_before.split()[0]) >= 1.0,
        "total_seconds": time.perf_counter() - start,
        "case_seconds": {k: round(v, 1) for k, v in case_seconds.items()},
        "note": args.note,
        "cases": list(args.cases),
        "command": " ".join(["python -m scripts.bench", *sys.argv[1:]]),
    }
    write_results(result, out_dir)
    print(f"wrote {out_dir / 'bench.md'}, {out_dir / 'bench.json'} ({result['meta']['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
