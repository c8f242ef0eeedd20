"""Classification heads by name, and finding the head of a built model."""

from __future__ import annotations

from typing import Iterator, Optional

import keras

from he_keras.defaults import DEFAULT_SCALE
from he_keras.layers import ArcCosLogits, HypersphereDense

HEADS = ("linear", "he", "mhe")


def make_head(
    head: str,
    num_classes: int,
    s: float = DEFAULT_SCALE,
    feature_norm: bool = True,
    weight_norm: bool = True,
    name: str = "head",
) -> keras.layers.Layer:
    """Builds the last layer of a classifier.

    Args:
        head: `"linear"` (a Dense layer with bias), `"he"` (HypersphereDense,
            logits `s*cos(theta)`) or `"mhe"` (ArcCosLogits, logits `-s*theta`).
        num_classes: Number of classes.
        s: Scale of the HE / m-HE logits (ignored for `"linear"`).
        feature_norm: FN switch of the HE heads (ablations).
        weight_norm: WN switch of the HE heads (ablations).
        name: Layer name.

    Returns:
        A Keras layer mapping features to logits.
    """
    if head == "linear":
        return keras.layers.Dense(num_classes, name=name)
    if head == "he":
        cls = HypersphereDense
    elif head == "mhe":
        cls = ArcCosLogits
    else:
        raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
    return cls(
        num_classes, s=s, feature_norm=feature_norm, weight_norm=weight_norm, name=name
    )


def walk_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `layer` and, depth first, every layer nested in it."""
    yield layer
    for sub in getattr(layer, "layers", []) or []:
        yield from walk_layers(sub)


def find_head(model: keras.Model) -> Optional[HypersphereDense]:
    """Returns the (last) HE / m-HE head of a model, or None if it has none.

    Args:
        model: A Keras model, possibly nesting other models.

    Returns:
        The `HypersphereDense` (or `ArcCosLogits`) layer, or None.
    """
    found = None
    for layer in walk_layers(model):
        if isinstance(layer, HypersphereDense):
            found = layer
    return found


def head_kind(model: keras.Model) -> str:
    """`"linear"`, `"he"` or `"mhe"` for the head of `model`."""
    head = find_head(model)
    if head is None:
        return "linear"
    return "mhe" if isinstance(head, ArcCosLogits) else "he"
