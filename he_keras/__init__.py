"""he-keras: adversarial training with hypersphere embedding for Keras 3."""

from he_keras.layers import ArcCosLogits, HypersphereDense
from he_keras.losses import CosineMarginLoss

__version__ = "0.1.0"

__all__ = ["ArcCosLogits", "CosineMarginLoss", "HypersphereDense", "__version__"]
