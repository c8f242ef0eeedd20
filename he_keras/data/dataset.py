"""The dataset container every loader returns, and the batching pipeline."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator, Optional

import numpy as np
import tensorflow as tf

from he_keras.data.crops import random_resized_crop
from he_keras.data.splits import TrainingSplits, hold_out_arrays
from he_keras.validation import validate_images, validate_labels


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification dataset with images in [0, 1].

    Attributes:
        name: Registered name.
        num_classes: Number of classes.
        input_shape: `(height, width, channels)`.
        train: Unbatched training split, `(float32 image, int32 label)`; with
            `augment="resized_crop_flip"` the images may have any size or be
            encoded (JPEG / PNG bytes, decoded after shuffling so that the
            shuffle buffer holds compressed images).
        test: Unbatched test split, images of shape `input_shape`.
        augment: Training augmentation, one of `AUGMENTATIONS`: `""` (none),
            `"crop"` (pad-4 random crop, SVHN), `"crop_flip"` (also random
            horizontal flip, CIFAR) or `"resized_crop_flip"` (random-resized
            crop to 224x224 and flip, ImageNet).
        mean: Per-channel mean for the model's normalization layer, or None.
        std: Per-channel std for the model's normalization layer, or None.
        train_as_test: The training split preprocessed as test data (decoded,
            of shape `input_shape`, never augmented): where callbacks draw
            their probe images. None means `train` itself (fixed-size images).
        hold_out: `hold_out(fraction, seed, limit) -> TrainingSplits`, the
            loader's way to hold validation examples out of the first `limit`
            training examples (0 = all) without reading them
            (`he_keras.data.splits`); use `split_validation`.
    """

    name: str
    num_classes: int
    input_shape: tuple
    train: tf.data.Dataset
    test: tf.data.Dataset
    augment: str = ""
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    train_as_test: Optional[tf.data.Dataset] = None
    hold_out: Optional[Callable[[float, int, int], TrainingSplits]] = None

    @property
    def probe_pool(self) -> tf.data.Dataset:
        """Training examples preprocessed as test data (fixed size, float32)."""
        return self.train if self.train_as_test is None else self.train_as_test


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    **kwargs,
) -> Dataset:
    """Wraps in-memory float images in [0, 1] and integer labels.

    The validation hold-out is a seeded, stratified draw from `y_train`
    (`he_keras.data.splits.hold_out_arrays`).
    """
    x_train, y_train = x_train.astype("float32"), y_train.astype("int32")

    def ds(x, y):
        return tf.data.Dataset.from_tensor_slices((x, y))

    return Dataset(
        name=name,
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        train=ds(x_train, y_train),
        test=ds(x_test.astype("float32"), y_test.astype("int32")),
        hold_out=functools.partial(hold_out_arrays, x_train, y_train),
        **kwargs,
    )


def split_validation(data: Dataset, fraction: float, seed: int, limit: int = 0) -> TrainingSplits:
    """Holds validation examples out of a dataset's training split, without reading it.

    Args:
        data: A `Dataset` from a loader (`from_arrays`, `load_dataset`).
        fraction: Share of the training examples held out, in [0, 1); 0
            keeps them all.
        seed: Seed of the draw (in-memory datasets; a tfds split's hold-out
            is its tail, the same for every seed).
        limit: Use only the first `limit` training examples (0 = all).

    Returns:
        `TrainingSplits`: the training examples, the validation examples
        preprocessed as test data (or None), and their numbers.

    Raises:
        ValueError: if the split is empty or a part would be empty.

    Example:

    ```python
    splits = split_validation(load_dataset("digits"), 0.1, seed=0)
    splits.n_train, splits.n_validation  # (1293, 144)
    ```
    """
    if data.hold_out is None:
        raise ValueError(
            f"Dataset {data.name!r} has no hold-out rule: build it with `from_arrays` or `load_dataset`"
        )
    return data.hold_out(fraction, seed, limit)


AUGMENTATIONS = ("", "crop", "crop_flip", "resized_crop_flip")
# Examples in the training shuffle buffer (encoded ones for ImageNet-style
# data): an in-memory split of up to this size is shuffled completely.
SHUFFLE_BUFFER = 10_000


def decode_image(image: tf.Tensor) -> tf.Tensor:
    """Encoded bytes (JPEG / PNG), uint8 or float pixels -> float32 in [0, 1]."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _augmenter(kind: str, seed: int) -> Callable:
    """Stateless per-example augmentation keyed by (seed, position in epoch),
    so an epoch's crops do not depend on thread scheduling and a resumed run
    sees the same images as an uninterrupted one."""

    def augment(index: tf.Tensor, example: tuple) -> tuple:
        image, label = example
        key = tf.stack([tf.cast(seed, tf.int64), index])
        if kind == "resized_crop_flip":
            image = random_resized_crop(decode_image(image), seed=key)
        else:
            h, w = image.shape[0], image.shape[1]
            padded = tf.image.pad_to_bounding_box(image, 4, 4, h + 8, w + 8)
            image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=key)
        if kind.endswith("_flip"):
            image = tf.image.stateless_random_flip_left_right(image, seed=key + 1)
        return image, label

    return augment


def batches(
    data: tf.data.Dataset,
    batch_size: int,
    shuffle: bool = False,
    augment: str = "",
    seed: Optional[int] = None,
    drop_remainder: bool = False,
    steps: Optional[int] = None,
) -> tf.data.Dataset:
    """Shuffles, augments, batches and prefetches a split.

    Args:
        data: An unbatched split.
        batch_size: Global batch size.
        shuffle: Reshuffle each epoch (seeded by `seed`).
        augment: One of `AUGMENTATIONS`: none, pad-4 random crop, crop and
            random horizontal flip, or random-resized crop to 224x224 (any
            input size, encoded images decoded here) and flip.
        seed: Seed of shuffling and augmentation (vary it per epoch).
        drop_remainder: Keep static batch shapes (needed by the multi-worker
            loop and by XLA).
        steps: Only the first `steps` batches (None: all); nothing past
            them is read, decoded or prefetched.

    Returns:
        A batched `tf.data.Dataset`.
    """
    if shuffle:
        data = data.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}. Received: {augment!r}")
    if augment:
        data = data.enumerate().map(
            _augmenter(augment, 0 if seed is None else seed),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    if steps is not None:
        data = data.take(steps)
    return data.prefetch(tf.data.AUTOTUNE)


def test_batches(data: Dataset, limit: int = 0, batch_size: int = 256) -> Iterator[tuple]:
    """The test split in batches of NumPy arrays, each checked before use.

    Args:
        data: The dataset.
        limit: Only the first `limit` test examples (0 = all).
        batch_size: Examples per batch.

    Yields:
        `(images, labels)`; one batch is in memory at a time.

    Raises:
        ValueError: naming the examples of a batch with non-finite or
            out-of-range images, the wrong shape, or labels out of range.

    Example:

    ```python
    for x, y in test_batches(load_dataset("digits"), limit=100, batch_size=32):
        print(x.shape, y[:4])
    ```
    """
    test = data.test.take(limit) if limit else data.test
    start = 0
    for x, y in test.batch(batch_size).as_numpy_iterator():
        name = f"test images {start}-{start + len(x) - 1}"
        validate_images(x, data.input_shape, name=name)
        validate_labels(y, data.num_classes, len(x))
        start += len(x)
        yield x, y.astype("int32")


def to_numpy(data: tf.data.Dataset, limit: Optional[int] = None) -> tuple:
    """Materializes (at most `limit` examples of) a split as NumPy arrays.

    Raises:
        ValueError: for a split of encoded or variable-size images (an
            ImageNet-style training split), which only `batches` can crop.
    """
    spec = data.element_spec[0]
    if spec.dtype != tf.float32 or not spec.shape.is_fully_defined():
        raise ValueError(
            f"This split holds {spec.dtype.name} images of shape {spec.shape}, not float32 "
            "images of one size: an ImageNet-style training split is cropped only by "
            "`batches(..., augment=data.augment)`; use the test split for fixed-size images"
        )
    if limit is not None:
        data = data.take(limit)
    xs, ys = [], []
    for x, y in data.batch(1024).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("The dataset split is empty (0 examples)")
    return np.concatenate(xs), np.concatenate(ys).astype("int32")
