"""The validation split of a run, carved without a pass over the data.

Each loader knows how to hold examples out of its training split
(`Dataset.hold_out`):

- in-memory datasets (`from_arrays`: digits, mnist5k, user arrays) draw a
  seeded, stratified sample (`stratified_mask`) from the labels they already
  hold, and slice the arrays;
- tfds datasets take the last examples of the training split by tfds split
  slicing (`train[:a]` / `train[a:b]`): tfds shuffles a split's examples
  when it prepares it, so its tail is a random sample, the same for every
  seed (the usual practice, e.g. Keras' `validation_split` takes the tail
  too). Nothing is read before training starts.

Validation examples get the test-time preprocessing (ImageNet-style: resize
to 256, center 224 crop), never the training augmentation.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TrainingSplits:
    """The training examples of a run and its held-out validation examples.

    Attributes:
        train: Unbatched training examples (still to be augmented).
        validation: Unbatched validation examples, preprocessed as test
            data, or None without validation.
        n_train: Number of training examples.
        n_validation: Number of validation examples.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    n_train: int
    n_validation: int


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


def validation_count(n: int, fraction: float) -> int:
    """Examples held out of `n` for a `fraction`, checked to leave both parts.

    Args:
        n: Training examples available.
        fraction: Share held out, in [0, 1); 0 holds none out.

    Returns:
        `round(fraction * n)`.

    Raises:
        ValueError: if there is no example, or a positive fraction leaves
            either part empty.
    """
    if n == 0:
        raise ValueError("The training split is empty (0 examples)")
    n_val = int(round(fraction * n))
    if fraction > 0 and (n_val == 0 or n_val == n):
        raise ValueError(
            f"A validation split of {fraction:g} of {n} training examples "
            f"leaves {n_val} for validation and {n - n_val} for training. "
            "Pass another --validation_split (0 turns validation off) or more data"
        )
    return n_val


def hold_out_arrays(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, limit: int = 0
) -> TrainingSplits:
    """Stratified hold-out of in-memory examples (`stratified_mask`).

    Args:
        x: Training images, float32 in [0, 1].
        y: Integer labels.
        fraction: Share held out, in [0, 1).
        seed: Seed of the stratified draw.
        limit: Use only the first `limit` examples (0 = all).

    Returns:
        `TrainingSplits`, each part in the original order.
    """
    if limit:
        x, y = x[:limit], y[:limit]
    validation_count(len(y), fraction)
    mask = stratified_mask(y, fraction, seed) if fraction > 0 else np.zeros(len(y), bool)

    def part(chosen: np.ndarray) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x[chosen], y[chosen]))

    n_val = int(mask.sum())
    return TrainingSplits(
        train=part(~mask),
        validation=part(mask) if n_val else None,
        n_train=len(y) - n_val,
        n_validation=n_val,
    )
