"""Dormand-Prince 5(4), FSAL (Dormand & Prince, J. Comput. Appl. Math. 6(1), 1980).

Dense output: Shampine's 4th-order continuous extension (Math. Comp. 46(173), 1986), the
polynomial coefficients Hairer's DOPRI5 and SciPy's RK45 use.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .adaptive import AdaptiveRKSolver
from .tableau import ButcherTableau, DenseOutput

_B = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
# b_i(theta) = sum_j W[i, j] theta^(j+1)
_DENSE_WEIGHTS = np.array(
    [
        [1.0, -2.8535800653862835, 3.0717434641059005, -1.1270175653862835],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 4.023133379230305, -6.249321565289, 2.675424484351598],
        [0.0, -3.7324019615885042, 10.068970589843675, -5.685526961588504],
        [0.0, 2.5548038301849423, -6.399112377351017, 3.5219323679207912],
        [0.0, -1.3744241142186024, 3.272657752246729, -1.7672812570757455],
        [0.0, 1.3824689317781436, -3.764937863556287, 2.382468931778144],
    ]
)

DOPRI5 = ButcherTableau.from_lists(
    "dopri5",
    c=[0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
    a=[
        [],
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ],
    b=_B,
    b_low=[5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
    order=5,
    embedded_order=4,
    dense=DenseOutput(weights=_DENSE_WEIGHTS, order=4),
)


class Dopri5(AdaptiveRKSolver):
    tableau: ClassVar[ButcherTableau] = DOPRI5
