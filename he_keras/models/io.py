"""The one model loader: `.keras` files and SavedModel directories.

Every app (`evaluate`, `export`), HAT's helper model and the experiments load
classifiers through `load_model`, so a missing, truncated or corrupted file,
or a `.keras` file holding Python code, gets the same clear `ValueError`
everywhere.
"""

from __future__ import annotations

import os
import zipfile
from typing import Optional, Sequence

import keras
import tensorflow as tf

import he_keras.layers  # noqa: F401  (registers the HE heads for deserialization)

# SavedModel endpoints tried in order: he_keras exports (`serve_float` takes
# [0, 1] floats), `Model.export` (`serve`), then TF Serving's default.
ENDPOINTS = ("serve_float", "serve", "serving_default")


def resolve_model_path(path: str) -> str:
    """Checks that `path` names a model; a TF Serving base directory resolves
    to its highest numbered version.

    Args:
        path: A `.keras` file, a SavedModel directory, or a directory of
            numbered SavedModel versions (`he_keras.export` writes those).

    Returns:
        The path of the `.keras` file or SavedModel directory.

    Raises:
        ValueError: if nothing is there, or it is neither kind of model.
    """
    if not os.path.exists(path):
        raise ValueError(f"Model file not found: {path!r} does not exist")
    if not os.path.isdir(path):
        if not path.endswith(".keras"):
            raise ValueError(f"{path!r} must be a .keras file or a SavedModel directory")
        return path
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(
        int(d) for d in os.listdir(path)
        if d.isdigit() and os.path.exists(os.path.join(path, d, "saved_model.pb"))
    )
    if not versions:
        raise ValueError(
            f"{path!r} is a directory without saved_model.pb (not a SavedModel nor a "
            "TF Serving base directory with numbered versions)"
        )
    return os.path.join(path, str(versions[-1]))


def _load_keras_file(path: str) -> keras.Model:
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} could not be loaded: not a valid .keras archive (corrupted or truncated file)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for broken archives.
        if "safe_mode" in str(err):
            raise ValueError(
                f"Refusing to load {path!r}: it holds a Lambda layer with Python code, which "
                "could run arbitrary code (Keras safe_mode). Rebuild the model from "
                "registered layers."
            ) from err
        raise ValueError(
            f"{path!r} could not be loaded (corrupted or not a he_keras model): "
            f"{type(err).__name__}: {err}"
        ) from err


def _load_saved_model(path: str, input_shape: Optional[Sequence[int]]) -> keras.Model:
    try:
        loaded = tf.saved_model.load(path)
    except Exception as err:  # TF raises several types for broken SavedModels.
        raise ValueError(
            f"{path!r} could not be loaded (corrupted SavedModel): {type(err).__name__}: {err}"
        ) from err
    endpoint = next((e for e in ENDPOINTS if hasattr(loaded, e) or e in loaded.signatures), None)
    if endpoint is None:
        raise ValueError(f"{path!r} has none of the endpoints {ENDPOINTS}")
    layer = keras.layers.TFSMLayer(path, call_endpoint=endpoint)
    fn = layer.call_endpoint_fn
    signature = fn.concrete_functions[0] if hasattr(fn, "concrete_functions") else fn
    specs = tf.nest.flatten(signature.structured_input_signature)
    if len(specs) != 1 or not specs[0].dtype.is_floating:
        raise ValueError(
            f"{path!r}: endpoint {endpoint!r} must take one float image batch. "
            f"Received inputs {specs}"
        )
    shape = tuple(specs[0].shape[1:])
    if None in shape:
        if input_shape is None:
            raise ValueError(
                f"{path!r}: endpoint {endpoint!r} takes images of unknown size {shape}; "
                "pass `input_shape`"
            )
        shape = tuple(input_shape)
    inputs = keras.Input(shape)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=os.path.basename(os.path.normpath(path)))


def load_model(
    path: str,
    input_shape: Optional[Sequence[int]] = None,
    saved_model: bool = True,
) -> keras.Model:
    """Loads a classifier from a `.keras` file or a SavedModel directory.

    `.keras` files load in Keras safe mode (uncompiled). A SavedModel is
    wrapped in a `keras.Model` over its `serve_float`, `serve` or
    `serving_default` endpoint (its `logits` output when it returns several),
    so it is called like any Keras model; its layers are not visible.

    Args:
        path: A `.keras` file, a SavedModel directory or a TF Serving base
            directory (its highest version is loaded).
        input_shape: `(height, width, channels)` for a SavedModel whose
            signature leaves the image size open.
        saved_model: False refuses SavedModels (callers that need the
            model's layers, such as the export).

    Returns:
        The model.

    Raises:
        ValueError: naming the path: missing, truncated or corrupted file,
            a Lambda layer with Python code (refused), or a SavedModel
            without a usable endpoint.

    Example:

    ```python
    model = load_model("runs/quickstart/model.keras")
    served = load_model("serving/digits_he")   # newest exported version
    ```
    """
    path = resolve_model_path(path)
    if not os.path.isdir(path):
        return _load_keras_file(path)
    if not saved_model:
        raise ValueError(f"The model must be a `.keras` file. Received the SavedModel {path!r}")
    return _load_saved_model(path, input_shape)
