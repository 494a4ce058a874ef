"""How each library is called: solve(field, y0, t, rtol, atol, mode) -> ys of shape (T, *y0.shape),
and which gradient modes each one has, so that the cases never branch on the library themselves.

mode: "direct" (backprop through the solver), "adjoint", "seminorm" (adjoint, seminorm), "nograd",
and for neuralode only "checkpoint" (odeint_checkpoint, a checkpoint at every step) and the
"-nocarry" adjoint variants.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import neuralode

LIBRARIES = ("neuralode", "torchdiffeq", "torchode")


def available_libraries(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """The requested libraries that import, and why each of the others does not."""
    found, missing = [], {}
    for name in requested:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing[name] = f"not installed ({error})"
            continue
        found.append(name)
    return found, missing


def library_version(name: str) -> str:
    """The installed distribution's version ("unknown" if there is no metadata)."""
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def solve_neuralode(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    carry = {"carry_step_size": False} if mode.endswith("-nocarry") else {}
    mode = mode.removesuffix("-nocarry")
    if mode in ("direct", "nograd"):
        return neuralode.odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    if mode == "checkpoint":
        return neuralode.odeint_checkpoint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    adjoint_options = {**({"norm": "seminorm"} if mode == "seminorm" else {}), **carry} or None
    return neuralode.odeint_adjoint(
        field, y0, t, rtol=rtol, atol=atol, method=method, options=options, adjoint_options=adjoint_options
    )


def solve_torchdiffeq(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    import torchdiffeq

    if mode in ("direct", "nograd"):
        return torchdiffeq.odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    adjoint_options = {"norm": "seminorm"} if mode == "seminorm" else None
    return torchdiffeq.odeint_adjoint(
        field, y0, t, rtol=rtol, atol=atol, method=method, options=options, adjoint_options=adjoint_options
    )


def solve_torchode(field, y0, t, rtol, atol, mode, method="dopri5", options=None):
    """torchode solves a batch of independent problems, state (batch, features); each sample gets its
    own step size (its error norm is per sample, unlike the two others, which control the whole batch)."""
    import torchode

    if method != "dopri5":
        raise ValueError("torchode: only dopri5 is benchmarked")
    batch = y0.shape[0]
    term = torchode.ODETerm(field)
    step = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    if mode in ("direct", "nograd"):
        solver = torchode.AutoDiffAdjoint(step, controller)
    elif mode == "adjoint":  # the joint variant: one backward solve of the whole batch, like the others
        solver = torchode.JointBacksolveAdjoint(term, step, controller)
    else:
        raise NotImplementedError("torchode has no seminorm adjoint")
    t_eval = t.to(y0.dtype).expand(batch, -1)
    solution = solver.solve(torchode.InitialValueProblem(y0=y0.flatten(1), t_eval=t_eval))
    return solution.ys.transpose(0, 1).reshape(len(t), *y0.shape)


SOLVE: dict[str, Callable] = {
    "neuralode": solve_neuralode,
    "torchdiffeq": solve_torchdiffeq,
    "torchode": solve_torchode,
}
MODES = {  # which gradient modes each library supports
    "neuralode": ("direct", "adjoint", "seminorm"),
    "torchdiffeq": ("direct", "adjoint", "seminorm"),
    "torchode": ("direct", "adjoint"),
}
# Case 3 also runs neuralode's adjoint without carrying the step size across output intervals (the A/B
# of that lever: adjoint_options={"carry_step_size": False}).
NOCARRY_MODES = ("adjoint-nocarry", "seminorm-nocarry")
# Cases 3 and 5 also run neuralode's checkpointed adjoint (no peer has one): its gradient is direct
# backprop's, its memory the checkpoints plus one step's graph.
CHECKPOINT_MODES = ("checkpoint",)


def memory_modes(lib: str) -> tuple[str, ...]:
    """The gradient modes of case 5: direct and adjoint, and neuralode's checkpointed adjoint."""
    return ("direct", "adjoint", *(CHECKPOINT_MODES if lib == "neuralode" else ()))
