"""Small convolutional classifiers for digits (8x8) and MNIST (28x28)."""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from he_keras.defaults import DEFAULT_SCALE
from he_keras.models.heads import make_head
from he_keras.models.normalization import input_normalization


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    head: str = "linear",
    s: float = DEFAULT_SCALE,
    conv_filters: Sequence[int] = (32, 64),
    dense_units: Sequence[int] = (128,),
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    feature_norm: bool = True,
    weight_norm: bool = True,
    name: str = "small_cnn",
) -> keras.Model:
    """A plain CNN: 3x3 ReLU convolutions, 2x2 max-pooling after every second
    one, ReLU dense layers, then the head.

    `conv_filters=(32, 32, 64, 64), dense_units=(200, 200)` is the four-layer
    CNN TRADES and seed 003 use on MNIST (`trades_cnn`); the default is a
    smaller net for 8x8 digits.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        head: `"linear"`, `"he"` or `"mhe"`.
        s: Scale of the HE heads.
        conv_filters: Filters of each convolution.
        dense_units: Units of each hidden dense layer (the last one gives the
            penultimate features the HE head normalizes).
        mean: Optional per-channel mean, applied inside the model.
        std: Optional per-channel standard deviation, applied inside the model.
        feature_norm: FN switch of the HE heads.
        weight_norm: WN switch of the HE heads.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping [0, 1] images to logits.

    Example:

    ```python
    model = small_cnn((8, 8, 1), 10, head="he", s=15.0)
    ```
    """
    inputs = keras.Input(tuple(input_shape), name="images")
    x = input_normalization(inputs, mean, std)
    for i, filters in enumerate(conv_filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    for units in dense_units:
        x = keras.layers.Dense(units, activation="relu")(x)
    outputs = make_head(head, num_classes, s, feature_norm, weight_norm)(x)
    return keras.Model(inputs, outputs, name=name)


def trades_cnn(input_shape: Sequence[int], num_classes: int, **kwargs) -> keras.Model:
    """The four-convolution MNIST CNN of TRADES (32-32-64-64, FC 200-200).

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        **kwargs: Other `small_cnn` arguments (head, s, ...).

    Returns:
        A functional `keras.Model`.
    """
    kwargs.setdefault("name", "trades_cnn")
    return small_cnn(
        input_shape,
        num_classes,
        conv_filters=(32, 32, 64, 64),
        dense_units=(200, 200),
        **kwargs,
    )
