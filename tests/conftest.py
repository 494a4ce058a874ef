import pytest
import torch

from neuralode import SOLVERS

ADAPTIVE_METHODS = sorted(m for m, cls in SOLVERS.items() if cls.tableau.adaptive)
FIXED_METHODS = sorted(m for m, cls in SOLVERS.items() if not cls.tableau.adaptive)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
