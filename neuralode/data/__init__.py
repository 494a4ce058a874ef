"""Dataset helpers shared by the experiments."""

from .batches import ImageBatches as ImageBatches
from .mnist import load_mnist as load_mnist
from .spirals import SpiralSpec as SpiralSpec
from .spirals import Spirals as Spirals
from .spirals import make_spirals as make_spirals
