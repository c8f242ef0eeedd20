"""The validation split of a run: seeded, stratified, streamed."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf


def stratified_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Chooses `round(fraction * n)` examples, each class in proportion.

    Class `c` with `n_c` examples gives `floor(fraction * n_c)` of them, and
    the examples still missing go to the classes with the largest remainders
    (ties broken at random); within a class the examples are drawn at random.

    Args:
        labels: Integer labels, shape `(n,)`.
        fraction: Share of the examples to choose, in [0, 1).
        seed: Seed of the draws.

    Returns:
        A boolean mask, True for the chosen (validation) examples.

    Example:

    ```python
    mask = stratified_mask(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5, seed=0)
    # two of the four 0s and three of the six 1s
    ```
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    take = np.floor(quotas).astype(int)
    missing = int(round(fraction * len(labels))) - int(take.sum())
    order = np.lexsort((rng.random(len(classes)), -(quotas - take)))
    take[order[:missing]] += 1
    mask = np.zeros(len(labels), bool)
    for label, count in zip(classes, take):
        mask[rng.permutation(np.flatnonzero(labels == label))[:count]] = True
    return mask


def split_validation(
    train: tf.data.Dataset, fraction: float, seed: int
) -> tuple[tf.data.Dataset, Optional[tf.data.Dataset], int, int]:
    """Splits a training split into training and validation examples.

    The labels are read once (one pass over the data); the two parts are
    then filtered from `train` by position, so nothing is held in memory but
    one boolean per example.

    Args:
        train: Unbatched `(image, label)` training examples.
        fraction: Share held out for validation, in [0, 1); 0 keeps all.
        seed: Seed of the stratified draw (`stratified_mask`).

    Returns:
        `(train, validation or None, n_train, n_validation)`.

    Raises:
        ValueError: if `train` or either part would be empty.
    """
    labels = np.concatenate(
        [y for y in train.map(lambda x, y: y).batch(4096).as_numpy_iterator()] or [[]]
    )
    if len(labels) == 0:
        raise ValueError("The training split is empty (0 examples)")
    if fraction == 0:
        return train, None, len(labels), 0
    mask = stratified_mask(labels, fraction, seed)
    n_val = int(mask.sum())
    if n_val == 0 or n_val == len(labels):
        raise ValueError(
            f"A validation split of {fraction:g} of {len(labels)} training examples "
            f"leaves {n_val} for validation and {len(labels) - n_val} for training. "
            "Pass another --validation_split (0 turns validation off) or more data"
        )
    is_validation = tf.constant(mask)

    def part(validation: bool, size: int) -> tf.data.Dataset:
        chosen = train.enumerate().filter(
            lambda index, example: tf.equal(tf.gather(is_validation, index), validation)
        )
        # A known size lets Keras count the batches (no "ran out of data").
        return chosen.map(lambda index, example: example).apply(
            tf.data.experimental.assert_cardinality(size)
        )

    n_train = len(labels) - n_val
    return part(False, n_train), part(True, n_val), n_train, n_val
