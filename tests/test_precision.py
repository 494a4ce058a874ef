"""Mixed precision: under torch.autocast only func runs in low precision; the solver stays in float32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuralode
from neuralode import SolveStats


class Decay(nn.Module):
    """dy/dt = -y * rate: no op that autocast touches, so func itself is the same in any precision."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(0.7))

    def forward(self, t, y):
        return -self.rate * y


class LinearField(nn.Module):
    """A field autocast does run in bfloat16 (``nn.Linear``); records the dtypes it saw."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(dim, dim)
        self.seen: set[torch.dtype] = set()

    def forward(self, t, y):
        out = torch.tanh(self.linear(y))
        self.seen.add(out.dtype)
        return out


def _problem():
    y0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0.0, 1.0, 7)
    return y0, t


def test_solver_arithmetic_is_not_autocast():
    """With a field autocast does not change, a bfloat16 autocast solve is bit-identical to float32: the
    stage sums, the error norm and the dense output (an addmm, which CPU autocast runs in bfloat16) all
    stay in float32."""
    y0, t = _problem()
    func = Decay()
    reference = neuralode.odeint(func, y0, t, rtol=1e-6, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = neuralode.odeint(func, y0, t, rtol=1e-6, atol=1e-7)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, reference)


def test_func_runs_in_bfloat16_and_the_solution_stays_float32():
    y0, t = _problem()
    func = LinearField()
    reference = neuralode.odeint(func, y0, t, rtol=1e-5, atol=1e-6)
    func.seen.clear()
    stats = SolveStats()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = neuralode.odeint(func, y0, t, rtol=1e-5, atol=1e-6, stats=stats)
    assert func.seen == {torch.bfloat16}
    assert mixed.dtype == torch.float32
    assert stats.forward.nfe > 0
    # bfloat16 keeps 8 bits of mantissa: the solutions agree to its precision, not to float32's
    error = (mixed - reference).abs().max().item()
    assert 0 < error < 3e-2


@pytest.mark.parametrize(
    "solve", [neuralode.odeint_adjoint, neuralode.odeint_checkpoint], ids=["adjoint", "checkpoint"]
)
def test_gradients_under_autocast_match_float32(solve):
    """The adjoint's and the checkpointed adjoint's backward passes re-enter the forward autocast."""
    y0, t = _problem()
    func = LinearField()
    reference_y0 = y0.clone().requires_grad_(True)
    solve(func, reference_y0, t, rtol=1e-5, atol=1e-6).square().sum().backward()
    reference = [reference_y0.grad, *(p.grad.clone() for p in func.parameters())]
    func.zero_grad()
    func.seen.clear()
    mixed_y0 = y0.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = solve(func, mixed_y0, t, rtol=1e-5, atol=1e-6).square().sum()
    loss.backward()  # outside autocast, as recommended: the backward solve re-enters it for func
    assert func.seen == {torch.bfloat16}
    mixed = [mixed_y0.grad, *(p.grad for p in func.parameters())]
    for got, want in zip(mixed, reference, strict=True):
        assert got.dtype == torch.float32
        relative = ((got - want).norm() / want.norm()).item()
        assert relative < 5e-2


def test_no_autocast_means_no_change():
    """Without autocast the precision machinery is inert: func sees float32."""
    y0, t = _problem()
    func = LinearField()
    neuralode.odeint(func, y0, t)
    assert func.seen == {torch.float32}


# ----------------------------------------------------------------------------------------------------
# The shared training loop's precision setting


def _ode_trainer(run_dir, precision: str):
    from neuralode.data import ImageBatches
    from neuralode.models.ode_block import ODEBlock
    from neuralode.training import Trainer, TrainerConfig
    from neuralode.training.classification import classification_error, classification_loss

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    torch.manual_seed(0)
    field = LinearField(16)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 16),
        ODEBlock(field, solver=neuralode.SolverConfig(gradient=neuralode.Adjoint())),
        nn.Linear(16, 10),
    )
    train = ImageBatches(images, labels, 16, shuffle=True, seed=3)
    config = TrainerConfig(
        epochs=1, batches_per_epoch=len(train), progress=False, tensorboard=False, precision=precision
    )
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.05), train.epoch, classification_loss,
        lambda m: {"test_error": classification_error(m, train.epoch(0))["error"]},
        config, run_dir, torch.device("cpu"),
    )  # fmt: skip
    return trainer, field


def test_trainer_bf16_runs_the_field_in_bfloat16(tmp_path):
    trainer, field = _ode_trainer(tmp_path / "bf16", "bf16")
    result = trainer.fit()
    assert field.seen == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(result["final"]["train_loss"]))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # the precision is part of the settings a checkpoint must match to be resumed
    with pytest.raises(ValueError, match="different settings"):
        _ode_trainer(tmp_path / "bf16", "fp32")


def test_trainer_fp32_is_unchanged(tmp_path):
    trainer, field = _ode_trainer(tmp_path / "fp32", "fp32")
    trainer.fit()
    assert field.seen == {torch.float32}


def test_fp16_is_refused_with_the_fix():
    from neuralode.training import TrainerConfig

    with pytest.raises(ValueError, match=r"GradScaler.*bf16"):
        TrainerConfig(epochs=1, batches_per_epoch=1, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        TrainerConfig(epochs=1, batches_per_epoch=1, precision="half")
