"""Classifier backbones with a linear, HE or m-HE head, built by name, and the
one model loader (`load_model`: `.keras` files and SavedModels)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras

from he_keras.models.heads import HEADS, find_head, head_kind, make_head
from he_keras.models.io import load_model
from he_keras.models.resnets import preact_resnet18, resnet50, wide_resnet
from he_keras.models.small_cnn import small_cnn, trades_cnn

MODELS: dict[str, Callable[..., keras.Model]] = {
    "small_cnn": small_cnn,
    "trades_cnn": trades_cnn,
    "preact_resnet18": preact_resnet18,
    "wide_resnet": wide_resnet,
    "resnet50": resnet50,
}


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> keras.Model:
    """Builds a registered classifier by name.

    Args:
        name: A key of `MODELS`.
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        **kwargs: Model arguments (`head`, `s`, `mean`, `std`, ...).

    Returns:
        A `keras.Model` mapping [0, 1] images to logits.
    """
    if name not in MODELS:
        raise ValueError(
            f"Unknown model. Expected one of {sorted(MODELS)}. Received: model={name!r}"
        )
    return MODELS[name](input_shape, num_classes, **kwargs)


__all__ = [
    "HEADS",
    "MODELS",
    "build_model",
    "find_head",
    "head_kind",
    "load_model",
    "make_head",
    "preact_resnet18",
    "resnet50",
    "wide_resnet",
    "small_cnn",
    "trades_cnn",
]
