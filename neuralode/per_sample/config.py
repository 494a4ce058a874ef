"""``PerSample``: how a per-sample solve treats finished and failed samples."""

from __future__ import annotations

from dataclasses import dataclass

ON_FAILURE = ("raise", "nan")


@dataclass(frozen=True)
class PerSample:
    """Settings of ``per_sample`` solving (``per_sample=True`` is ``PerSample()``).

    Attributes:
        compact: evaluate func only on the samples still running (off by default). func then sees fewer
            rows than y0 has, so it must treat rows independently and hold no per-sample tensors of its
            own (a row's parameters, targets or noise would no longer line up with its state).
        with_rows: call ``func(t, y, rows)`` with ``rows`` the LongTensor of the sample indices of y's
            rows (useful with ``compact``: per-sample tensors of func can be indexed by it).
        on_failure: "raise" (default): a sample that fails (max_num_steps, step underflow, non-finite
            state) raises a :class:`~neuralode.PerSampleSolveError` naming every failing sample and its
            time; "nan": the failed samples' outputs from the failure on are NaN, the others are
            returned, and ``stats.status`` says which sample ended how.
    """

    compact: bool = False
    with_rows: bool = False
    on_failure: str = "raise"

    def __post_init__(self) -> None:
        for name in ("compact", "with_rows"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"PerSample({name}=...) must be True or False, got {getattr(self, name)!r}")
        if self.on_failure not in ON_FAILURE:
            raise ValueError(
                f"PerSample(on_failure={self.on_failure!r}) must be one of {ON_FAILURE}: 'raise' stops "
                "with an error naming the failed samples, 'nan' returns them as NaN rows"
            )


def per_sample_config(value: object) -> PerSample | None:
    """``per_sample`` as given to a front door (False/None, True, or a PerSample) -> PerSample or None."""
    if value is None or value is False:
        return None
    if value is True:
        return PerSample()
    if isinstance(value, PerSample):
        return value
    raise TypeError(
        f"per_sample must be True, False or a neuralode.PerSample(...), got {type(value).__name__} {value!r}"
    )
