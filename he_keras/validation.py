"""Input checks shared by the public API and the apps.

Each check raises one `ValueError` that names the offending value, before any
compute starts.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def validate_images(
    x: Any, expected_shape: Optional[Sequence[Optional[int]]] = None, name: str = "images"
) -> np.ndarray:
    """Checks a batch of images in [0, 1] and returns it as float32 NumPy.

    Args:
        x: Array-like of shape `(batch, height, width, channels)`.
        expected_shape: Optional per-example shape `(height, width, channels)`;
            None entries are not checked.
        name: How the value is called in error messages.

    Returns:
        The images as a float32 array.

    Raises:
        ValueError: if the batch is empty, of the wrong rank or shape, holds
            NaN/inf, or has values outside [0, 1].
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"`{name}` must be numeric. Received dtype={arr.dtype}")
    arr = arr.astype("float32", copy=False)
    if arr.ndim != 4:
        raise ValueError(
            f"`{name}` must have rank 4 (batch, height, width, channels). "
            f"Received shape={arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 examples). Received shape={arr.shape}")
    if expected_shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape[1:], expected_shape)):
            if want is not None and got != want:
                raise ValueError(
                    f"`{name}` must have per-example shape {tuple(expected_shape)}. "
                    f"Received shape={arr.shape[1:]} (axis {axis + 1} is {got}, "
                    f"expected {want})"
                )
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = int(np.argwhere(bad.reshape(len(arr), -1).any(1))[0, 0])
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} non-finite values (NaN/inf); "
            f"first in example {idx}"
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"`{name}` must lie in [0, 1] (pixel units). Received min={lo}, max={hi}"
        )
    return arr


def validate_labels(y: Any, num_classes: int, num_examples: Optional[int] = None) -> np.ndarray:
    """Checks integer labels in `[0, num_classes)` and returns them as int32.

    Args:
        y: Array-like of shape `(batch,)`.
        num_classes: Number of classes.
        num_examples: If given, the required number of labels.

    Returns:
        The labels as an int32 array.

    Raises:
        ValueError: for non-integer values, wrong shape, or out-of-range labels.
    """
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"`labels` must have shape (batch,). Received shape={arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("`labels` must be integers. Received non-integer values")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"`labels` must be integers. Received dtype={arr.dtype}")
    if num_examples is not None and len(arr) != num_examples:
        raise ValueError(
            f"Got {len(arr)} labels for {num_examples} images; they must match"
        )
    if len(arr) and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)][0]
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}). Received label {bad}"
        )
    return arr.astype("int32")
