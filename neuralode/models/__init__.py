"""Model parts the experiments share."""

from .ode_block import ODEBlock

__all__ = ["ODEBlock"]
