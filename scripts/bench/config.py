"""The benchmark's sizes and repeats: the full profile of ``make bench`` and the seconds-long
``--quick`` smoke profile (whose numbers mean nothing), and where the repository is."""

from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def config(quick: bool) -> dict:
    """The sizes and repeats of every case: the smoke profile if ``quick``, else the full one."""
    if quick:
        return {
            "batches": [16],
            "n_times": 3,
            "tol": 1e-4,
            "repeats": 1,
            "sweep_batch": 16,
            "sweep_tols": [1e-3, 1e-5],
            "sweep_repeats": 1,
            "grad_batch": 16,
            "grad_dtypes": [torch.float64],
            "grad_repeats": 1,
            "block_channels": 8,
            "block_size": 4,
            "block_batch": 4,
            "block_repeats": 1,
            "memory_steps": [2],
            "memory_repeats": 1,
            "adjoint_mlp_batch": 16,
            "adjoint_reference_rtol": {"mlp": 1e-10, "block": 1e-6},
            "adjoint_repeats": {"mlp": 1, "block": 1},
            "adjoint_instances": {"batch": 2, "seeds": 2, "reference_rtol": 1e-6},
            "per_sample_batch": 8,
            "per_sample_t_end": 2.0,
            "per_sample_times": 5,
            "per_sample_repeats": 1,
            "per_sample_compaction_widths": [4, 64],
            "stiff_t_end": {"robertson": 10.0, "van der pol mu=1000": 1.0},
            "stiff_rtol": 1e-6,
            "stiff_repeats": 1,
            "stiff_sweep_rtols": [1e-5, 1e-6],
            "stiff_dopri5_cap": 200,
            "stiff_training": {"t_end": 0.02, "n_times": 4, "iterations": 2, "batch": 2, "width": 8},
            "large_stiff": {"states": [400, 800], "rtol": 1e-4, "atol": 1e-6, "dopri5_cap": 50},
        }
    return {
        "batches": [512, 16],
        "n_times": 10,
        "tol": 1e-6,
        "repeats": 21,
        "sweep_batch": 512,
        "sweep_tols": [1e-4, 1e-5, 1e-6, 1e-7, 1e-8],
        "sweep_repeats": 7,
        "grad_batch": 512,
        "grad_dtypes": [torch.float32, torch.float64],
        "grad_repeats": 5,
        "block_channels": 64,
        "block_size": 6,
        "block_batch": 128,
        "block_repeats": 5,
        "memory_steps": [10, 40, 160],
        "memory_repeats": 3,
        "adjoint_mlp_batch": 512,
        "adjoint_reference_rtol": {"mlp": 1e-12, "block": 1e-7},  # float64 dopri8 (the block: adjoint)
        "adjoint_repeats": {"mlp": 7, "block": 3},
        # the block's gradient error over random instances (weights and input per seed), batch 32
        "adjoint_instances": {"batch": 32, "seeds": 8, "reference_rtol": 1e-7},
        "per_sample_batch": 256,
        "per_sample_t_end": 10.0,
        "per_sample_times": 50,
        "per_sample_repeats": 5,
        "per_sample_compaction_widths": [4, 32, 128, 512],
        # case 9 (issue 22): Robertson to 1e5, Van der Pol mu=1000 over about two periods
        "stiff_t_end": {"robertson": 1e5, "van der pol mu=1000": 3000.0},
        "stiff_rtol": 1e-6,
        "stiff_repeats": 3,
        "stiff_sweep_rtols": [1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
        "stiff_dopri5_cap": 5_000,
        # case 10: a grey-box Robertson field (learned rates + MLP) trained with dopri5 and kvaerno5
        "stiff_training": {"t_end": 2.0, "n_times": 10, "iterations": 8, "batch": 4, "width": 32},
        # case 11: the stiff reaction-diffusion system at 25k, 50k and 100k states (matrix-free kvaerno5)
        "large_stiff": {"states": [25_000, 50_000, 100_000], "rtol": 1e-6, "atol": 1e-8, "dopri5_cap": 3_000},
    }
