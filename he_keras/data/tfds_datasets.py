"""Datasets from TensorFlow Datasets (need internet or a prepared `data_dir`).

Images are cast to float32 in [0, 1]; per-channel mean / std are returned for
the model's normalization layer, never applied to the data. ImageNet-style
datasets (images of any size) train on random-resized 224x224 crops and test
on the 224x224 center of the image resized to 256 (`he_keras.data.crops`).
A run's validation examples are the tail of the training split, taken by
tfds split slicing (`he_keras.data.splits`), so nothing is read to carve them.
Tested offline with `tfds.testing.mock_data`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Optional

import tensorflow as tf

from he_keras.data.crops import CROP_SIZE, resize_center_crop
from he_keras.data.dataset import Dataset, decode_image
from he_keras.data.splits import TrainingSplits, validation_count

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How to load one tfds dataset.

    Attributes:
        classes: Number of classes.
        augment: Training augmentation (see `he_keras.data.dataset.AUGMENTATIONS`).
            `"resized_crop_flip"` marks datasets whose images vary in size.
        mean: Per-channel mean for the model's normalization layer, or None.
        std: Per-channel std, or None.
        test_split: The tfds split used as test set.
        tfds_name: `name/config` for `tfds.load`, when it differs from the key.
        manual_files: Archives a manual-download dataset is prepared from.
    """

    classes: int
    augment: str = ""
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    test_split: str = "test"
    tfds_name: Optional[str] = None
    manual_files: tuple = ()


_IMAGENETTE = dict(
    classes=10, augment="resized_crop_flip", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    test_split="validation",
)
IMAGENETTE_CONFIGS = ("full-size-v2", "320px-v2", "160px-v2")

TFDS_DATASETS: dict[str, TfdsSpec] = {
    "mnist": TfdsSpec(10),
    "cifar10": TfdsSpec(10, "crop_flip", (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": TfdsSpec(100, "crop_flip", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Digits must not be mirrored: SVHN trains with random crops only.
    "svhn_cropped": TfdsSpec(10, "crop", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # ILSVRC-2012 cannot be downloaded by tfds: see `check_manual_data_dir`.
    "imagenet2012": TfdsSpec(
        1000, "resized_crop_flip", IMAGENET_MEAN, IMAGENET_STD, test_split="validation",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    ),
    # Imagenette (10 easy ImageNet classes): the shorter side is 320 pixels in
    # the default, enough for 224 crops at a fraction of full-size decoding.
    "imagenette": TfdsSpec(tfds_name="imagenette/320px-v2", **_IMAGENETTE),
    **{
        f"imagenette/{config}": TfdsSpec(tfds_name=f"imagenette/{config}", **_IMAGENETTE)
        for config in IMAGENETTE_CONFIGS
    },
}


def _to_unit_float(image: tf.Tensor, label: tf.Tensor) -> tuple:
    return decode_image(image), tf.cast(label, tf.int32)


def _center_crop(image: tf.Tensor, label: tf.Tensor) -> tuple:
    return resize_center_crop(decode_image(image)), tf.cast(label, tf.int32)


def _label(image: tf.Tensor, label: tf.Tensor) -> tuple:
    return image, tf.cast(label, tf.int32)


def check_manual_data_dir(name: str, data_dir: Optional[str]) -> Optional[str]:
    """Checks that `data_dir` holds a manual-download dataset.

    Args:
        name: A key of `TFDS_DATASETS` with `manual_files`.
        data_dir: The tfds data directory.

    Returns:
        The directory holding the archives (tfds `manual_dir`), or None when
        `data_dir` holds the prepared dataset.

    Raises:
        ValueError: naming what `data_dir` must contain.
    """
    spec = TFDS_DATASETS[name]
    tfds_name = spec.tfds_name or name
    expected = (
        f"--data_dir=DIR where DIR holds the prepared tfds dataset "
        f"(DIR/{tfds_name}/<version>/) or the archives {', '.join(spec.manual_files)} "
        f"downloaded by hand (in DIR or DIR/downloads/manual/)"
    )
    if not data_dir:
        raise ValueError(f"The {name!r} dataset cannot be downloaded automatically: pass {expected}")
    data_dir = os.path.expanduser(data_dir)
    if glob.glob(os.path.join(data_dir, *tfds_name.split("/"), "*", "dataset_info.json")):
        return None
    for manual_dir in (data_dir, os.path.join(data_dir, "downloads", "manual")):
        if all(os.path.isfile(os.path.join(manual_dir, f)) for f in spec.manual_files):
            return manual_dir
    raise ValueError(
        f"data_dir={data_dir!r} holds neither the prepared {name!r} dataset nor its archives. "
        f"Pass {expected}"
    )


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
    spec = TFDS_DATASETS[name]
    prepare = {}
    if spec.manual_files:
        manual_dir = check_manual_data_dir(name, data_dir)
        if manual_dir is not None:
            prepare["download_config"] = tfds.download.DownloadConfig(manual_dir=manual_dir)
    variable_size = spec.augment == "resized_crop_flip"

    def load(split: str, with_info: bool = False):
        try:
            return tfds.load(
                spec.tfds_name or name,
                split=split,
                as_supervised=True,
                with_info=with_info,
                data_dir=data_dir,
                download_and_prepare_kwargs=prepare or None,
                # Images of any size stay encoded until cropped (training ones
                # until augmentation, after shuffling).
                decoders={"image": tfds.decode.SkipDecoding()} if variable_size else None,
            )
        except Exception as err:  # tfds raises many types for missing data / no network
            raise ValueError(
                f"Could not load the tfds dataset {name!r} (data_dir={data_dir!r}): "
                f"{type(err).__name__}: {err}. Without internet, prepare it on a machine "
                "with access (`tfds build` or one `tfds.load`) and pass --data_dir."
            ) from err

    (raw_train, raw_test), info = load(["train", spec.test_split], with_info=True)
    if variable_size:
        shape = (CROP_SIZE, CROP_SIZE, 3)
        as_train, as_test = _label, _center_crop
    else:
        shape = tuple(info.features["image"].shape)
        as_train = as_test = _to_unit_float
    # A prepared split knows its size; `info` has it too.
    n_available = int(raw_train.cardinality())
    if n_available < 0:
        n_available = info.splits["train"].num_examples

    def preprocess(examples: tf.data.Dataset, map_fn) -> tf.data.Dataset:
        return examples.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)

    def hold_out(fraction: float, seed: int, limit: int = 0) -> TrainingSplits:
        # The tail of the (shuffled at preparation) split: no seed, no pass.
        del seed
        n = min(n_available, limit) if limit else n_available
        n_val = validation_count(n, fraction)
        cut = n - n_val
        # `take` keeps the counts exact where a split ignores slicing (tfds mock data).
        train = raw_train if cut == n_available else load(f"train[:{cut}]").take(cut)
        validation = load(f"train[{cut}:{n}]").take(n_val) if n_val else None
        return TrainingSplits(
            preprocess(train, as_train),
            None if validation is None else preprocess(validation, as_test),
            cut,
            n_val,
        )

    return Dataset(
        name=name,
        num_classes=spec.classes,
        input_shape=shape,
        train=preprocess(raw_train, as_train),
        test=preprocess(raw_test, as_test),
        augment=spec.augment,
        mean=spec.mean,
        std=spec.std,
        train_as_test=preprocess(raw_train, as_test) if variable_size else None,
        hold_out=hold_out,
    )

