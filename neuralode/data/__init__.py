"""Dataset helpers shared by the experiments."""

from .batches import ImageBatches as ImageBatches
from .mnist import load_mnist as load_mnist
