"""Per-channel input normalization as a layer inside the model."""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np


def input_normalization(
    inputs: keras.KerasTensor,
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
) -> keras.KerasTensor:
    """Applies `(x - mean) / std` per channel, or nothing if both are None.

    Keeping the normalization inside the model means attacks, eps and
    clipping all live in [0, 1] pixel space.

    Args:
        inputs: Image tensor `(batch, height, width, channels)`.
        mean: Per-channel mean, or None.
        std: Per-channel standard deviation, or None.

    Returns:
        The normalized tensor.
    """
    if mean is None and std is None:
        return inputs
    channels = inputs.shape[-1]
    mean = np.broadcast_to(np.asarray(0.0 if mean is None else mean, "float32"), (channels,))
    std = np.broadcast_to(np.asarray(1.0 if std is None else std, "float32"), (channels,))
    if np.any(std <= 0):
        raise ValueError(f"`std` must be > 0 per channel. Received: std={std.tolist()}")
    return keras.layers.Normalization(
        mean=mean.tolist(), variance=(std**2).tolist(), name="input_normalization"
    )(inputs)
