"""he-keras: adversarial training with hypersphere embedding for Keras 3.

The HE head and its loss run on every Keras 3 backend; the trainers, attacks,
evaluation, data and export need TensorFlow (see `he_keras.backends`). None
of them is imported here, so `import he_keras` under `KERAS_BACKEND=jax` or
`torch` does not import TensorFlow.
"""

from he_keras.backends import install_import_guard
from he_keras.layers import ArcCosLogits, HypersphereDense
from he_keras.losses import CosineMarginLoss

install_import_guard()

__version__ = "0.1.0"

__all__ = ["ArcCosLogits", "CosineMarginLoss", "HypersphereDense", "__version__"]
