"""Which parts of he-keras run on which Keras 3 backend.

The HE head (`HypersphereDense`, `ArcCosLogits`), `CosineMarginLoss`, the
per-example losses of `he_keras.losses` and the model builders of
`he_keras.models` use `keras.ops` only and run on every backend (TensorFlow,
JAX, PyTorch). The adversarial trainers, the attacks, the evaluation suite,
the data pipeline and the export are built on `tf.function`,
`tf.GradientTape` and `tf.data`: importing one of them under another backend
raises an `ImportError` that says so, instead of failing later inside a
train step.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any, Optional, Sequence

import keras

# Modules that need the TensorFlow backend (their submodules too).
TENSORFLOW_ONLY = (
    "he_keras.attacks",
    "he_keras.data",
    "he_keras.evaluation",
    "he_keras.export",
    "he_keras.training",
)


class BackendError(ImportError):
    """A TensorFlow-only part of he_keras imported under another Keras backend."""


def require_tensorflow(module: str) -> None:
    """Raises `BackendError` (an `ImportError`) unless Keras runs on the TensorFlow backend.

    Args:
        module: Name of the module that needs TensorFlow (for the message).

    Raises:
        BackendError: The Keras backend is not `"tensorflow"`.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{module} needs the TensorFlow backend of Keras "
            f"(KERAS_BACKEND=tensorflow). Received: backend={backend!r}. "
            "Under other backends he_keras provides HypersphereDense, "
            "ArcCosLogits, CosineMarginLoss, he_keras.losses and "
            "he_keras.models."
        )


class _TensorFlowOnlyFinder(importlib.abc.MetaPathFinder):
    """Stops imports of `TENSORFLOW_ONLY` modules under another backend."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Any = None
    ) -> None:
        if fullname in TENSORFLOW_ONLY:
            require_tensorflow(fullname)
        return None  # Let the regular finders load the module.


def install_import_guard() -> None:
    """Puts the TensorFlow-only import check on `sys.meta_path` (once)."""
    if not any(isinstance(f, _TensorFlowOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowOnlyFinder())
