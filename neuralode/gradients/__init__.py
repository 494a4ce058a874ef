"""How a solve is differentiated: the gradient strategies handed to ``solve(..., gradient=...)``.

- :class:`Direct`: backpropagate through the solver's operations (memory grows with the steps).
- :class:`Adjoint`: the adjoint method, a backward solve of the augmented ODE (memory O(1) in the steps).
- :class:`Checkpointed`: the gradients of direct backprop, re-running the recorded steps from checkpoints.
"""

from .spec import Adjoint as Adjoint
from .spec import Checkpointed as Checkpointed
from .spec import Direct as Direct
from .spec import Gradient as Gradient
from .spec import gradient_from_name as gradient_from_name

__all__ = ["Adjoint", "Checkpointed", "Direct", "Gradient", "gradient_from_name"]
