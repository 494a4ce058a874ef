"""How each sample of a per-sample solve ended, and the error that names the failed ones."""

from __future__ import annotations

from torch import Tensor

from ..errors import SolverError

RUNNING, SUCCESS, MAX_STEPS, UNDERFLOW, NON_FINITE = 0, 1, 2, 3, 4
STATUS_NAMES = {
    RUNNING: "running",
    SUCCESS: "success",
    MAX_STEPS: "max_num_steps",
    UNDERFLOW: "step_underflow",
    NON_FINITE: "non_finite",
}
_ADVICE = {
    MAX_STEPS: "raise options['max_num_steps'] or loosen rtol/atol",
    UNDERFLOW: "the sample may be stiff or singular there; loosen rtol/atol, set options['min_step'], or "
    "use another method",
    NON_FINITE: "check func for overflow or division by zero at that sample's state",
}


class PerSampleSolveError(SolverError):
    """Samples of a per-sample solve failed (``PerSample(on_failure="raise")``, the default).

    Attributes:
        samples: the failed sample indices (ints); ``times``: the time each had reached (floats);
        ``reasons``: why each failed ("max_num_steps", "step_underflow", "non_finite");
        ``t``: the first failed sample's time.
    """

    def __init__(self, samples: list[int], times: list[float], reasons: list[str], message: str) -> None:
        super().__init__(message, times[0])
        self.samples, self.times, self.reasons = samples, times, reasons


def status_names(status: Tensor) -> tuple[str, ...]:
    """The (B,) status codes as names, one per sample."""
    return tuple(STATUS_NAMES[int(s)] for s in status.tolist())


def failure_error(
    status: Tensor, t: Tensor, max_steps: int, event: bool = False
) -> PerSampleSolveError | None:
    """The error naming every failed sample (up to 10 in the message), or None if none failed;
    ``event``: an event search, whose samples that ran out of steps never saw event_fn change sign."""
    failed = ((status != SUCCESS) & (status != RUNNING)).nonzero().flatten().tolist()
    if not failed:
        return None
    codes, times = status.tolist(), t.tolist()
    reasons = [STATUS_NAMES[codes[i]] for i in failed]
    shown = [
        f"sample {i} at t={times[i]!r} ({STATUS_NAMES[codes[i]]}"
        + (f" after {max_steps:,} steps" if codes[i] == MAX_STEPS else "")
        + ")"
        for i in failed[:10]
    ]
    more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
    advice = "; ".join(sorted({f"{STATUS_NAMES[c]}: {_ADVICE[c]}" for c in {codes[i] for i in failed}}))
    if event and MAX_STEPS in {codes[i] for i in failed}:
        advice += (
            ". An event search has no end time: max_num_steps (default 1,000 for an event search) means "
            "event_fn never changed sign for that sample in the direction of t (or its time overflowed)"
        )
    message = (
        f"{len(failed)} of {status.numel()} samples failed: {', '.join(shown)}{more}. {advice}. "
        "Pass per_sample=neuralode.PerSample(on_failure='nan') to get the other samples back, with the "
        "failed ones as NaN rows and stats.status saying which ended how."
    )
    return PerSampleSolveError(failed, [times[i] for i in failed], reasons, message)
