"""Fuzz: generated bad and odd inputs to odeint, odeint_adjoint, odeint_checkpoint and odeint_event.

Every call must, within a few seconds, either return a finite, correctly shaped result (and, where
it needs one, a backward pass) or raise one of the documented errors: a ValueError/TypeError raised by
neuralode itself that names the argument, a ``SolverError`` subclass, or the user's own exception from
the user's own code. Never a raw TypeError/RuntimeError from torch or Python inside the package.
"""

from __future__ import annotations

import math
import signal
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import neuralode
from neuralode import SolverError, odeint, odeint_adjoint, odeint_checkpoint, odeint_event

PACKAGE = str(Path(neuralode.__file__).parent)
TIME_LIMIT_S = 5
NAMES = (
    "func",
    "y0",
    "t",
    "t0",
    "rtol",
    "atol",
    "method",
    "options",
    "event_fn",
    "adjoint",
    "checkpoint_every",
)


class UserBug(Exception):
    """Raised by a generated func/event_fn/norm: the user's own error, which must pass through."""


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


# ----- the generated pieces -----

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.bool,
    torch.complex64,
]
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]


@st.composite
def tensors(draw, allow_odd=True):
    shape = draw(
        st.sampled_from([(), (0,), (1,), (2,), (3,), (2, 2), (1, 0, 2)] if allow_odd else [(2,), (3,)])
    )
    dtype = draw(st.sampled_from(DTYPES if allow_odd else [torch.float32, torch.float64]))
    values = draw(st.lists(st.sampled_from(SPECIAL) | st.floats(-3, 3), min_size=1, max_size=1))
    base = torch.full(shape, values[0] if allow_odd else 0.5, dtype=torch.float64)
    if dtype == torch.bool:
        return base.abs() > 0.5
    if dtype == torch.int64:
        return torch.nan_to_num(base, posinf=1, neginf=-1).to(dtype)
    return base.to(dtype)


def y0s():
    good = st.sampled_from([torch.ones(2), torch.tensor([1.0, 2.0], dtype=torch.float64), torch.ones(2, 3)])
    odd = tensors()
    tuples = st.tuples(tensors(), tensors()) | st.tuples(good, good)
    other = st.sampled_from([None, 1.0, [1.0, 2.0], (), "y0", np.ones(2)])
    return st.one_of(good, good, odd, tuples, other)


def ts():
    good = st.sampled_from([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.0])])
    odd = st.sampled_from(
        [
            torch.tensor([0.0, 0.0]),
            torch.tensor([0.0, math.nan]),
            torch.tensor([0.0, math.inf]),
            torch.tensor([[0.0, 1.0]]),
            torch.tensor([]),
            torch.tensor(1.0),
            torch.tensor([0, 1]),
            torch.tensor([0.0, 1.0], dtype=torch.float64),
            torch.tensor([0.0, 1e-300]),
            torch.tensor([0.0, 2.0, 1.0]),
            [0.0, 1.0],
            None,
        ]
    )
    return st.one_of(good, good, odd)


TOLERANCES = st.sampled_from(
    [1e-6, 1e-3, 0.0, -1.0, math.nan, math.inf, "1e-3", None, True, torch.tensor(1e-4),
     torch.tensor([1e-3, 1e-3]), np.float64(1e-5), 1e300]
)  # fmt: skip
METHODS = st.sampled_from(
    [None, "dopri5", "tsit5", "bosh3", "rk4", "euler", "implicit_adams", "implicit_euler", "scipy_solver",
     "nonsense", "", 5, ["dopri5"], b"rk4"]
)  # fmt: skip


def norms():
    def raising(e):
        raise UserBug("norm")

    return st.sampled_from([
        lambda e: -1.0, lambda e: "small", lambda e: torch.tensor(math.nan), lambda e: None,
        lambda e: torch.zeros(2), lambda e: 0.0, lambda e: torch.tensor(1j), raising, "rms", "l2", 3,
    ])  # fmt: skip


def option_dicts():
    key = st.sampled_from(
        ["step_size", "max_num_steps", "first_step", "safety", "ifactor", "dfactor", "min_step", "max_step",
         "norm", "grid_constructor", "interp", "perturb", "controller", "jump_t", "solver", "bogus", 1, None]
    )  # fmt: skip
    value = st.one_of(
        st.sampled_from([0.1, 0.5, 1, 0, -1, 5, 1e-12, math.nan, math.inf, True, None, "a", [0.1], 10**6]),
        norms(),
        st.sampled_from([
            lambda f, y0, t: torch.linspace(float(t[0]), float(t[-1]), 5),
            lambda f, y0, t: torch.tensor([0.0, math.nan, 1.0]),
            lambda f, y0, t: "grid",
            torch.tensor([0.5]),
        ]),
    )  # fmt: skip
    other = st.sampled_from([None, "options", [("step_size", 0.1)]])
    return st.one_of(st.dictionaries(key, value, max_size=3), other)


def funcs():
    def nan_later(t, y):
        return -y if float(t) < 0.3 else y * math.nan

    def shape_later(t, y):
        return -y if float(t) < 0.3 else torch.cat([y.reshape(-1), y.reshape(-1)])

    def raising(t, y):
        raise UserBug("func")

    def tuple_aware(t, y):
        return tuple(-x for x in y) if isinstance(y, tuple) else -y

    return st.sampled_from([
        tuple_aware, tuple_aware, lambda t, y: torch.zeros(7),
        lambda t, y: y.double() if not isinstance(y, tuple) else y, lambda t, y: None,
        lambda t, y: y * math.nan if not isinstance(y, tuple) else y, nan_later, shape_later, raising, "func",
        lambda t, y: (y, y),
    ])  # fmt: skip


def event_fns():
    def raising(t, y):
        raise UserBug("event_fn")

    def first(y):
        return y[0] if isinstance(y, tuple) else y

    return st.sampled_from([
        None, lambda t, y: first(y).reshape(-1)[:1] * 0 + 10.0, lambda t, y: first(y)[:0],
        lambda t, y: first(y) * math.nan, lambda t, y: t - 0.5, lambda t, y: torch.tensor(1),
        lambda t, y: 1.0, raising, 3,
    ])  # fmt: skip


GOOD_FUNC = st.sampled_from([lambda t, y: tuple(-x for x in y) if isinstance(y, tuple) else -y])
GOOD_OPTIONS = st.sampled_from([None, {}, {"max_num_steps": 50}, {"first_step": 0.01}])
GOOD_EVENT = st.sampled_from(
    [lambda t, y: t - 0.5, lambda t, y: (y[0] if isinstance(y, tuple) else y).sum() - 0.5]
)


@st.composite
def cases(draw):
    """One call; each argument is a good value 3 times in 4, so that most calls reach the solvers."""
    solve = draw(st.sampled_from(["odeint", "odeint_adjoint", "odeint_checkpoint", "odeint_event"]))

    def pick(good, odd):
        return draw(odd) if draw(st.integers(0, 3)) == 0 else draw(good)

    method = pick(st.sampled_from([None, "dopri5", "tsit5", "bosh3", "rk4", "euler"]), METHODS)
    fixed = method in ("rk4", "euler", "implicit_adams", "implicit_euler")
    good_options = GOOD_OPTIONS.map(lambda o: {"step_size": 0.1} if fixed else o)
    wants_event = solve == "odeint_event" or (solve != "odeint_checkpoint" and draw(st.integers(0, 3)) == 0)
    return {
        "solve": solve,
        "func": pick(GOOD_FUNC, funcs()),
        "y0": pick(st.sampled_from([torch.ones(2), torch.ones(2, 3, dtype=torch.float64)]), y0s()),
        "t": pick(st.sampled_from([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5, 0.0])]), ts()),
        "rtol": pick(st.just(1e-6), TOLERANCES),
        "atol": pick(st.just(1e-8), TOLERANCES),
        "method": method,
        "options": pick(good_options, option_dicts()),
        "event_fn": pick(GOOD_EVENT if wants_event else st.just(None), event_fns()),
    }


CASES = cases()


# ----- running one case and judging the outcome -----


def call(case):
    solve, kwargs = case["solve"], {"rtol": case["rtol"], "atol": case["atol"], "method": case["method"],
                                    "options": case["options"]}  # fmt: skip
    func, y0, t, event_fn = case["func"], case["y0"], case["t"], case["event_fn"]
    if solve == "odeint_event":
        t0 = t[0] if isinstance(t, torch.Tensor) and t.dim() == 1 and t.numel() else t
        t = torch.zeros(2)  # the solution has [y0, y(event_t)]
        return odeint_event(func, y0, t0, event_fn=event_fn, **kwargs), True
    if solve == "odeint":
        return odeint(func, y0, t, event_fn=event_fn, **kwargs), event_fn is not None
    fn = odeint_adjoint if solve == "odeint_adjoint" else odeint_checkpoint
    return fn(func, y0, t, event_fn=event_fn, adjoint_params=(), **kwargs), event_fn is not None


def check_result(out, case, event: bool) -> None:
    y0, t = case["y0"], case["t"]
    tensors = y0 if isinstance(y0, tuple) else (y0,)
    if event:
        event_t, sol = out
        assert math.isfinite(float(event_t))
        lead = (2,)
    else:
        sol, lead = out, (len(t),)
    parts = sol if isinstance(sol, tuple) else (sol,)
    assert len(parts) == len(tensors)
    for part, x in zip(parts, tensors, strict=True):
        assert part.shape == (*lead, *x.shape), (part.shape, x.shape)
        assert bool(torch.isfinite(part.float()).all()), "a non-finite result without an error"


HARNESS = ("call", "check_result", "run_case", "judge")


def judge(err: BaseException) -> None:
    """Is this exception one of the documented kinds?"""
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, UserBug):
        return  # the user's code raised it; it passed through unchanged
    if frames and frames[-1].filename == __file__ and frames[-1].name not in HARNESS:
        return  # an error inside a generated func/event_fn/norm (e.g. slicing a 0-dim y): the user's own
    if isinstance(err, SolverError):
        return
    assert isinstance(err, ValueError | TypeError), f"undocumented {type(err).__name__}: {err}"
    innermost = frames[-1].filename if frames else ""
    assert innermost.startswith(PACKAGE), f"raw {type(err).__name__} from {innermost}: {err}"
    message = str(err)
    assert any(name in message for name in NAMES), f"message names no argument: {message}"


def run_case(case) -> None:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out, event = call(case)
                if isinstance(out, tuple) and not event:
                    first = out[0]
                else:
                    first = out[1] if event else out
                    first = first[0] if isinstance(first, tuple) else first
                check_result(out, case, event)
                if first.requires_grad:
                    first.float().sum().backward()
            except Timeout:
                pytest.fail(f"no result or error within {TIME_LIMIT_S} s")
            except AssertionError:
                raise
            except Exception as err:  # judged below
                judge(err)
    finally:
        signal.alarm(0)
        torch.set_grad_enabled(True)


FOUND = {  # regressions the fuzz found, kept as examples (see the report of issue 16)
    "0-dim y0 (view() with no sizes)": {
        "solve": "odeint", "func": lambda t, y: -y, "y0": torch.tensor(1.0), "t": torch.tensor([0.0, 1.0]),
        "rtol": 1e-6, "atol": 1e-8, "method": None, "options": None, "event_fn": None,
    },
    "non-string option keys (sorted() of mixed types)": {
        "solve": "odeint", "func": lambda t, y: -y, "y0": torch.ones(2), "t": torch.tensor([0.0, 1.0]),
        "rtol": 1e-6, "atol": 1e-8, "method": None, "options": {1: 2, "bogus": 3}, "event_fn": None,
    },
}  # fmt: skip


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM for the time bound")
@given(case=CASES)
@example(case=FOUND["0-dim y0 (view() with no sizes)"])
@example(case=FOUND["non-string option keys (sorted() of mixed types)"])
@settings(max_examples=400, suppress_health_check=list(HealthCheck))
def test_every_call_returns_a_finite_result_or_a_documented_error(case):
    run_case(case)
