"""Datasets from TensorFlow Datasets (need internet or a prepared `data_dir`).

Images are cast to float32 in [0, 1]; per-channel mean / std are returned for
the model's normalization layer, never applied to the data. Tested offline
with `tfds.testing.mock_data`.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from he_keras.data.dataset import Dataset

# name -> (train split, test split, classes, augmentation, mean, std)
TFDS_DATASETS = {
    "mnist": ("train", "test", 10, "", None, None),
    "cifar10": (
        "train", "test", 10, "crop_flip",
        (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
    ),
    "cifar100": (
        "train", "test", 100, "crop_flip",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
    # Digits must not be mirrored: SVHN trains with random crops only.
    "svhn_cropped": (
        "train", "test", 10, "crop",
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
    ),
}


def _to_unit_float(image: tf.Tensor, label: tf.Tensor) -> tuple:
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)


def load_tfds(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Loads a tfds image-classification dataset as a `Dataset` in [0, 1].

    Args:
        name: A key of `TFDS_DATASETS`.
        data_dir: tfds data directory (downloads there when online).

    Returns:
        A `Dataset`.

    Example:

    ```python
    data = load_tfds("cifar10", data_dir="~/tensorflow_datasets")
    ```
    """
    import tensorflow_datasets as tfds

    if name not in TFDS_DATASETS:
        raise ValueError(
            f"Unknown tfds dataset. Expected one of {sorted(TFDS_DATASETS)}. "
            f"Received: dataset={name!r}"
        )
    train_split, test_split, classes, augment, mean, std = TFDS_DATASETS[name]
    try:
        (train, test), info = tfds.load(
            name,
            split=[train_split, test_split],
            as_supervised=True,
            with_info=True,
            data_dir=data_dir,
        )
    except Exception as err:  # tfds raises many types for missing data / no network
        raise ValueError(
            f"Could not load the tfds dataset {name!r} (data_dir={data_dir!r}): "
            f"{type(err).__name__}: {err}. Without internet, prepare it on a machine "
            "with access (`tfds build` or one `tfds.load`) and pass --data_dir."
        ) from err
    shape = tuple(info.features["image"].shape)
    return Dataset(
        name=name,
        num_classes=classes,
        input_shape=shape,
        train=train.map(_to_unit_float, num_parallel_calls=tf.data.AUTOTUNE),
        test=test.map(_to_unit_float, num_parallel_calls=tf.data.AUTOTUNE),
        augment=augment,
        mean=mean,
        std=std,
    )
