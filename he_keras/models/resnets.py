"""Residual backbones of the papers: PreAct ResNet-18, WideResNet, ResNet-50.

All are functional Keras models mapping [0, 1] images to logits, with the
per-channel normalization as their first layer and a `linear`, `he` or `mhe`
head on the globally pooled features.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from he_keras.defaults import DEFAULT_SCALE
from he_keras.models.heads import make_head
from he_keras.models.normalization import input_normalization



def _bn_relu(x: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return keras.layers.ReLU()(x)


def _conv(filters: int, kernel: int, stride: int = 1) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal",
    )


def _preact_block(
    x: keras.KerasTensor, filters: int, stride: int, dropout: float = 0.0
) -> keras.KerasTensor:
    """Pre-activation basic block (BN-ReLU-conv twice) with its shortcut."""
    out = _bn_relu(x)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride)(out)
    out = _conv(filters, 3, stride)(out)
    out = _bn_relu(out)
    if dropout:
        out = keras.layers.Dropout(dropout)(out)
    out = _conv(filters, 3)(out)
    return keras.layers.Add()([out, shortcut])


def _classifier(
    inputs: keras.KerasTensor,
    features: keras.KerasTensor,
    num_classes: int,
    head: str,
    s: float,
    feature_norm: bool,
    weight_norm: bool,
    name: str,
) -> keras.Model:
    features = keras.layers.GlobalAveragePooling2D(name="pooled_features")(features)
    outputs = make_head(head, num_classes, s, feature_norm, weight_norm)(features)
    return keras.Model(inputs, outputs, name=name)


def preact_resnet18(
    input_shape: Sequence[int],
    num_classes: int,
    head: str = "linear",
    s: float = DEFAULT_SCALE,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    feature_norm: bool = True,
    weight_norm: bool = True,
    name: str = "preact_resnet18",
) -> keras.Model:
    """PreAct ResNet-18 (He et al. 2016), the FastAT / HAT backbone.

    The CIFAR variant: a 3x3 stride-1 stem and no max-pooling, so the first
    stage runs at the input resolution. At 224x224 it costs about 49 times
    its 32x32 cost (about 3.7 s per image forward-backward on 2 CPU cores,
    `bench/input_pipeline.py`); ImageNet-size inputs want `resnet50`.

    Args:
        input_shape: `(height, width, channels)`, e.g. `(32, 32, 3)`.
        num_classes: Number of classes.
        head: `"linear"`, `"he"` or `"mhe"`.
        s: Scale of the HE heads.
        mean: Per-channel mean (normalization inside the model).
        std: Per-channel std.
        feature_norm: FN switch of the HE heads.
        weight_norm: WN switch of the HE heads.
        name: Model name.

    Returns:
        A functional `keras.Model`.

    Example:

    ```python
    model = preact_resnet18((32, 32, 3), 10, head="he", s=15.0)
    ```
    """
    inputs = keras.Input(tuple(input_shape), name="images")
    x = _conv(64, 3)(input_normalization(inputs, mean, std))
    for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = _preact_block(x, filters, stride)
        x = _preact_block(x, filters, 1)
    x = _bn_relu(x)
    return _classifier(inputs, x, num_classes, head, s, feature_norm, weight_norm, name)


def wide_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int = 34,
    width: int = 10,
    dropout: float = 0.0,
    head: str = "linear",
    s: float = DEFAULT_SCALE,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    feature_norm: bool = True,
    weight_norm: bool = True,
    name: Optional[str] = None,
) -> keras.Model:
    """WideResNet-depth-width (Zagoruyko & Komodakis 2016); 34-10 is the
    TRADES / HE paper backbone.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        depth: Total depth, `6n + 4`.
        width: Widening factor.
        dropout: Dropout rate inside blocks.
        head: `"linear"`, `"he"` or `"mhe"`.
        s: Scale of the HE heads.
        mean: Per-channel mean (normalization inside the model).
        std: Per-channel std.
        feature_norm: FN switch of the HE heads.
        weight_norm: WN switch of the HE heads.
        name: Model name (default `wide_resnet_<depth>_<width>`).

    Returns:
        A functional `keras.Model`.

    Example:

    ```python
    model = wide_resnet((32, 32, 3), 10, depth=34, width=10, head="he")
    ```
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"`depth` must be 6n + 4 with n >= 1. Received: depth={depth}")
    if width < 1:
        raise ValueError(f"`width` must be >= 1. Received: width={width}")
    blocks = (depth - 4) // 6
    inputs = keras.Input(tuple(input_shape), name="images")
    x = _conv(16, 3)(input_normalization(inputs, mean, std))
    for filters, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
        for i in range(blocks):
            x = _preact_block(x, filters, stride if i == 0 else 1, dropout)
    x = _bn_relu(x)
    return _classifier(
        inputs, x, num_classes, head, s, feature_norm, weight_norm,
        name or f"wide_resnet_{depth}_{width}",
    )


def resnet50(
    input_shape: Sequence[int],
    num_classes: int,
    head: str = "linear",
    s: float = 10.0,
    mean: Optional[Sequence[float]] = (0.485, 0.456, 0.406),
    std: Optional[Sequence[float]] = (0.229, 0.224, 0.225),
    feature_norm: bool = True,
    weight_norm: bool = True,
    name: str = "resnet50",
) -> keras.Model:
    """ResNet-50 (Keras applications backbone, random init) with an HE head,
    the ImageNet FreeAT+HE backbone.

    Args:
        input_shape: `(height, width, 3)`.
        num_classes: Number of classes.
        head: `"linear"`, `"he"` or `"mhe"`.
        s: Scale of the HE heads.
        mean: Per-channel mean (ImageNet statistics by default).
        std: Per-channel std.
        feature_norm: FN switch of the HE heads.
        weight_norm: WN switch of the HE heads.
        name: Model name.

    Returns:
        A functional `keras.Model`.
    """
    inputs = keras.Input(tuple(input_shape), name="images")
    backbone = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=tuple(input_shape)
    )
    x = backbone(input_normalization(inputs, mean, std))
    return _classifier(inputs, x, num_classes, head, s, feature_norm, weight_norm, name)
