"""How a solve is differentiated: the gradient strategies handed to ``solve(..., gradient=...)``.

- :class:`Direct`: backpropagate through the solver's operations (memory grows with the steps).
- :class:`Adjoint`: the adjoint method, a backward solve of the augmented ODE (memory O(1) in the steps).
- :class:`Checkpointed`: the gradients of direct backprop, re-running the recorded steps from checkpoints.
"""

from .adjoint import Adjoint as Adjoint
from .by_name import Gradient as Gradient
from .by_name import gradient_from_name as gradient_from_name
from .checkpointed import Checkpointed as Checkpointed
from .direct import Direct as Direct

__all__ = ["Adjoint", "Checkpointed", "Direct", "Gradient", "gradient_from_name"]
