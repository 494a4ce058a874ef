"""A stand-in ``torchdiffeq`` package that resolves to neuralode, for running torchdiffeq programs unchanged.

Put ``tests/torchdiffeq_programs/shim`` first on PYTHONPATH and ``import torchdiffeq`` (and
``from torchdiffeq import odeint_adjoint as odeint``) give neuralode's functions. Set
``NEURALODE_SHIM_MARKER=1`` to have the import print one line naming the module that answered, so a
test can tell the shim (not the real torchdiffeq) was imported.
"""

import os
import sys

import neuralode
from neuralode import odeint, odeint_adjoint, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_event"]

try:  # odeint_dense is torchdiffeq's fourth public function; neuralode adds it on the dropin branch.
    from neuralode import odeint_dense  # type: ignore[attr-defined]  # noqa: F401

    __all__.append("odeint_dense")
except ImportError:
    pass

__version__ = "0.2.5+neuralode"

if os.environ.get("NEURALODE_SHIM_MARKER"):
    print(f"NEURALODE_SHIM torchdiffeq -> {neuralode.__file__}", file=sys.stderr, flush=True)
