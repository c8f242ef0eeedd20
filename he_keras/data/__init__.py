"""Datasets in [0, 1] pixel space: embedded ones and tfds ones by name."""

from __future__ import annotations

from typing import Callable, Optional

from he_keras.data.dataset import (
    Dataset,
    batches,
    from_arrays,
    split_validation,
    test_batches,
    to_numpy,
)
from he_keras.data.embedded import digits, mnist5k

EMBEDDED: dict[str, Callable[[], Dataset]] = {"digits": digits, "mnist5k": mnist5k}


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Loads a dataset by name.

    Args:
        name: `digits` or `mnist5k` (embedded, no download) or a tfds dataset
            of `he_keras.data.tfds_datasets.TFDS_DATASETS`.
        data_dir: tfds data directory (ignored for embedded datasets).

    Returns:
        A `Dataset`.
    """
    if name in EMBEDDED:
        return EMBEDDED[name]()
    from he_keras.data import tfds_datasets

    if name in tfds_datasets.TFDS_DATASETS:
        return tfds_datasets.load_tfds(name, data_dir=data_dir)
    known = sorted(EMBEDDED) + sorted(tfds_datasets.TFDS_DATASETS)
    raise ValueError(f"Unknown dataset. Expected one of {known}. Received: dataset={name!r}")


__all__ = [
    "Dataset", "EMBEDDED", "batches", "digits", "from_arrays", "load_dataset", "mnist5k",
    "split_validation", "test_batches", "to_numpy",
]
