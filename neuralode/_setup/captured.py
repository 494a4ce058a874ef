"""Tensors that func uses but the adjoint would not differentiate: found before the solve, warned about.

``odeint_adjoint`` and ``odeint_checkpoint`` compute gradients only for ``adjoint_params`` (default
``func.parameters()``); a tensor that requires grad and is captured another way gets none, silently,
where ``odeint`` would give it one. What is looked at (cheaply, one level deep, never arbitrary
objects' contents): an ``nn.Module`` func's buffers and plain tensor attributes (of every submodule),
a callable object's attributes, and the closure cells and the module-level tensors read by name of a
function, of a bound method and of an ``nn.Module``'s ``forward``; a cell or attribute holding a
list/tuple/dict contributes the tensors directly inside it. Not looked at: the parameters of a module
captured in a closure or a global (with ``torch.func.functional_call`` they are deliberately replaced
by others), tensors reached through other objects' attributes or through functions func calls, and
tensors computed inside func.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn

from ..errors import AdjointParamsWarning


def _function_closure(fn: Any) -> Iterator[tuple[str, Any]]:
    """(variable name, value) of a function's (or bound method's) closure cells."""
    fn = getattr(fn, "__func__", fn)
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None:
        return
    qualname = getattr(fn, "__qualname__", "func")
    for name, cell in zip(code.co_freevars, cells or (), strict=False):
        try:
            yield f"closure variable {name!r} of {qualname}", cell.cell_contents
        except ValueError:  # an empty cell (a variable not assigned yet)
            continue
    module_globals = getattr(fn, "__globals__", {})
    for name in code.co_names:  # the module-level names the code reads (a script's `w = torch.tensor(...)`)
        if isinstance(module_globals.get(name), Tensor):
            yield f"global variable {name!r} used by {qualname}", module_globals[name]


def _holders(func: Any) -> Iterator[tuple[str, Any]]:
    """(where, value) of everything one level inside func that may hold a tensor."""
    if isinstance(func, nn.Module):
        for mod_name, module in func.named_modules():
            prefix = f"func.{mod_name}." if mod_name else "func."
            for name, buf in module.named_buffers(recurse=False):
                yield f"buffer {prefix}{name}", buf
            for name, value in vars(module).items():
                if not name.startswith("_"):
                    yield f"attribute {prefix}{name}", value
        yield from _function_closure(type(func).forward)
        return
    yield from _function_closure(func)
    owner = getattr(func, "__self__", None)  # a bound method: its object's attributes
    target = owner if owner is not None else func
    if not hasattr(target, "__code__") and hasattr(target, "__dict__"):
        for name, value in vars(target).items():
            if not name.startswith("__"):
                yield f"attribute func.{name}", value
        if owner is None:
            yield from _function_closure(type(func).__call__)


def _tensors(where: str, value: Any) -> Iterator[tuple[str, Tensor]]:
    """The tensors of one holder: itself, or the entries of a list, tuple or dict."""
    if isinstance(value, Tensor):
        yield where, value
    elif isinstance(value, list | tuple):
        for i, x in enumerate(value):
            if isinstance(x, Tensor):
                yield f"{where}[{i}]", x
    elif isinstance(value, dict):
        for key, x in value.items():
            if isinstance(x, Tensor):
                yield f"{where}[{key!r}]", x


def uncaptured_tensors(func: Callable, adjoint_params: tuple[Tensor, ...]) -> list[str]:
    """Where func holds a tensor that requires grad but is not among ``adjoint_params``."""
    known = {id(p) for p in adjoint_params}
    if isinstance(func, nn.Module):
        known |= {id(p) for p in func.parameters()}  # an explicit adjoint_params subset is deliberate
    found, seen = [], set()
    for where, value in _holders(func):
        for name, x in _tensors(where, value):
            if x.requires_grad and id(x) not in known and id(x) not in seen:
                seen.add(id(x))
                found.append(name)
    return found


def warn_uncaptured(func: Callable, adjoint_params: tuple[Tensor, ...], caller: str) -> None:
    """One :class:`AdjointParamsWarning` naming every tensor whose gradient ``caller`` would drop."""
    found = uncaptured_tensors(func, adjoint_params)
    if found:
        warnings.warn(
            f"{caller}: func uses tensor(s) that require grad but are not in adjoint_params: "
            f"{', '.join(found)}. Their gradients would stay None (odeint would give them); pass them in "
            "adjoint_params=(...), or register them as nn.Parameter of func.",
            AdjointParamsWarning,
            stacklevel=3,
        )
