"""Datasets: embedded digits, tfds loaders (mocked offline), the pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from he_keras.data import batches, load_dataset, to_numpy
from he_keras.data.tfds_datasets import TFDS_DATASETS


def test_digits_split_shapes_and_range():
    data = load_dataset("digits")
    x, y = to_numpy(data.train)
    xt, yt = to_numpy(data.test)
    assert x.shape == (1437, 8, 8, 1) and xt.shape == (360, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 == x.min() and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    counts = np.bincount(yt, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    again, _ = to_numpy(load_dataset("digits").test)
    np.testing.assert_array_equal(again, xt)  # fixed split


# ImageNet-style datasets (any image size): tests/test_imagenet_data.py.
@pytest.mark.parametrize("name", sorted(n for n, s in TFDS_DATASETS.items() if s.augment != "resized_crop_flip"))
def test_tfds_loaders_offline(name):
    with tfds.testing.mock_data(num_examples=12):
        data = load_dataset(name)
        x, y = to_numpy(data.train)
    assert x.shape[1:] == data.input_shape and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.max() < data.num_classes
    if name.startswith("cifar"):
        assert data.augment == "crop_flip" and data.mean is not None


def test_augmentation_keeps_shape_and_range():
    images = tf.random.uniform((8, 32, 32, 3))
    ds = tf.data.Dataset.from_tensor_slices((images, tf.zeros(8, tf.int32)))
    x, _ = next(iter(batches(ds, 8, augment="crop_flip", seed=1)))
    assert x.shape == (8, 32, 32, 3)
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
    assert not np.allclose(x.numpy(), images.numpy())


def test_unknown_dataset_and_augmentation():
    with pytest.raises(ValueError, match="imagenet_typo"):
        load_dataset("imagenet_typo")
    ds = tf.data.Dataset.from_tensor_slices((tf.zeros((2, 4, 4, 1)), tf.zeros(2, tf.int32)))
    with pytest.raises(ValueError, match="rotate"):
        batches(ds, 2, augment="rotate")


def test_augmentation_is_reproducible_per_seed():
    images = tf.random.uniform((16, 32, 32, 3), seed=1)
    ds = tf.data.Dataset.from_tensor_slices((images, tf.zeros(16, tf.int32)))

    def first(seed):
        return next(iter(batches(ds, 16, shuffle=True, augment="crop_flip", seed=seed)))[0].numpy()

    np.testing.assert_array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))
