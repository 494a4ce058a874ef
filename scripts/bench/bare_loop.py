"""A bare dopri5 loop: the floor of case 2's overhead (total / time inside func) for a Python engine.

The same algorithm as neuralode's dopri5 on one flat tensor state, with the same steps, NFE and answer on
case 1 (the package's initial step selection and I controller at dopri5's default options, the mixed RMS
norm of the error over atol + rtol * max(|y0|, |y1|), the last step clamped to the end, outputs from
the Shampine interpolant), and nothing else: no argument checks, tuple states, statistics,
callbacks, stops, events or autograd paths. Per stage it does what any PyTorch engine must (a time
tensor, the stage input, the call, the stage stored); what it spends beyond func is what an engine
written in Python cannot avoid on this field. Used only by the benchmark, never by the package.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neuralode._setup.norms import RMSNorm
from neuralode.solvers.controllers import IntegralController, initial_step
from neuralode.solvers.dopri5 import DOPRI5
from neuralode.solvers.options import AdaptiveOptions
from neuralode.solvers.runge_kutta import DeviceTableau, dense_eval

BARE = "bare loop (floor)"  # its library name in case 1's rows


def bare_dopri5(func, y0: Tensor, t: Tensor, rtol: float, atol: float) -> Tensor:
    """dopri5 from y0 at t[0] to every time in ``t`` (increasing): (len(t), *y0.shape)."""
    shape, y = y0.shape, y0.reshape(-1)
    dtab = DeviceTableau(DOPRI5, y.dtype, y.device)
    c, a, order = dtab.c, dtab.a, DOPRI5.embedded_order + 1
    # the engine's controller arithmetic at dopri5's defaults: the floor shares the algorithm, not the engine
    defaults = AdaptiveOptions()
    controller = IntegralController(order, defaults.safety, defaults.ifactor, defaults.dfactor)
    rms = RMSNorm((y.numel(),))  # the engine's error norm: a tensor for the initial step, a float per step
    stages = torch.empty((dtab.num_stages, y.numel()), dtype=y.dtype, device=y.device)
    rows, prefix_t = list(stages.unbind(0)), [stages[:i].t() for i in range(dtab.num_stages + 1)]

    def f(time: float, state: Tensor) -> Tensor:
        return func(torch.scalar_tensor(time, dtype=y.dtype, device=y.device), state.view(shape)).reshape(-1)

    times = t.tolist()
    t0, t_end = times[0], times[-1]
    f0 = f(t0, y)
    h = initial_step(f, t0, y, f0, 1.0, order - 1, rtol, atol, rms)
    outputs, next_out, y_abs = [y], 1, y.abs()
    while next_out < len(times):
        t1 = min(t0 + h, t_end)
        dt = t1 - t0
        rows[0].copy_(f0)
        for i in range(1, dtab.num_stages):
            if i == dtab.num_stages - 1:  # the FSAL stage's input is y1: the increment summed first
                yi = y.add(torch.mv(prefix_t[i], a[i]), alpha=dt)
            else:
                yi = torch.addmv(y, prefix_t[i], a[i], alpha=dt)
            rows[i].copy_(f(t0 + c[i] * dt, yi))
        y1_abs = yi.abs()
        scale = torch.maximum(y_abs, y1_abs).mul_(rtol).add_(atol)
        ratio = rms.host(torch.mv(stages.t(), dtab.b_err).div_(scale)) * abs(dt)
        if ratio <= 1.0:
            thetas = []
            while next_out < len(times) and times[next_out] < t1:
                thetas.append((times[next_out] - t0) / dt)
                next_out += 1
            if thetas:
                outputs.extend(dense_eval(dtab, y, stages, dt, thetas).unbind(0))
            if next_out < len(times) and times[next_out] == t1:
                outputs.append(yi)
                next_out += 1
            t0, y, y_abs, f0 = t1, yi, y1_abs, rows[-1].clone()
        h = controller.next_step(abs(dt), ratio, accepted=ratio <= 1.0)
    return torch.stack(outputs).view(len(times), *shape)
