"""Small shared fixtures for the tests: data and quickly trained models."""

from __future__ import annotations

import fcntl
import functools
import os

import keras
import numpy as np

from he_keras.data import load_dataset, to_numpy
from he_keras.models import build_model


@functools.lru_cache(maxsize=None)
def digits_arrays() -> tuple:
    """(x_train, y_train, x_test, y_test) of the embedded digits dataset."""
    data = load_dataset("digits")
    return (*to_numpy(data.train), *to_numpy(data.test))


def undefended_digits_model(head: str = "linear", epochs: int = 30) -> keras.Model:
    """A small CNN trained cleanly on digits (about 97% test accuracy), trained
    once per session for each (head, epochs), however the call spells them."""
    return _undefended_digits_model(head, epochs)


# Set by conftest to a folder all pytest processes of the run share (the
# xdist workers' common temporary root): a model trained by one worker is
# loaded by the other instead of trained twice. None: train in-process.
SHARED_CACHE = None


@functools.lru_cache(maxsize=None)
def _undefended_digits_model(head: str, epochs: int) -> keras.Model:
    if SHARED_CACHE is None:
        return _train_undefended(head, epochs)
    os.makedirs(SHARED_CACHE, exist_ok=True)
    path = os.path.join(SHARED_CACHE, f"undefended_{head}_{epochs}.keras")
    # One process trains while the other waits on the lock, then loads.
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            model = _train_undefended(head, epochs)
            model.save(path + ".tmp.keras")
            os.replace(path + ".tmp.keras", path)
            return model
    return keras.saving.load_model(path)


def _train_undefended(head: str, epochs: int) -> keras.Model:
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (8, 8, 1), 10, head=head, s=15.0)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def fooled_within_round_off(model: keras.Model, x_adv, y, slack: float = 1e-4) -> np.ndarray:
    """Per example: misclassified, or on the decision boundary up to round-off.

    Minimal-norm and boundary-search attacks return points within a hair of
    the boundary, found on their own graphs and batch splits; `predict` on
    another batch split may put such a point a few ulps on the other side.
    """
    logits = np.asarray(model.predict(np.asarray(x_adv), verbose=0), np.float64)
    true = logits[np.arange(len(y)), y]
    others = np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits)
    return others.max(1) - true > -slack


def accuracy(model: keras.Model, x, y) -> float:
    """Top-1 accuracy of `model` (logits) on arrays."""
    logits = model.predict(np.asarray(x), batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))
