"""Accuracy under common corruptions: CIFAR-10-C and ImageNet-C via tfds.

Hendrycks & Dietterich's benchmarks, as `tfds` configs
`cifar10_corrupted/<corruption>_<severity>` and
`imagenet2012_corrupted/<corruption>_<severity>` (severities 1-5). The mean
corruption accuracy (mCA, HE paper Table 5) averages over corruptions and
severities; the per-corruption numbers average over severities.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

SEVERITIES = (1, 2, 3, 4, 5)

# The 15 benchmark corruptions (the 4 extra "validation" ones left out), as
# each tfds builder spells them.
_COMMON = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness",
    "contrast", "pixelate", "jpeg_compression",
)
# clean dataset -> (tfds name, split, corruptions)
CORRUPTED_VERSIONS = {
    "cifar10": ("cifar10_corrupted", "test", _COMMON + ("frosted_glass_blur", "elastic")),
    "imagenet2012": (
        "imagenet2012_corrupted", "validation", _COMMON + ("glass_blur", "elastic_transform"),
    ),
}


def corrupted_version(dataset: str) -> Optional[str]:
    """The tfds name of the corrupted version of `dataset`, or None."""
    entry = CORRUPTED_VERSIONS.get(dataset)
    return None if entry is None else entry[0]


def _load(
    name: str, split: str, n_examples: int, data_dir: Optional[str], batch_size: int
) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    data = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)
    return data.take(n_examples).map(
        lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32))
    ).batch(batch_size)


def corruption_accuracy(
    model: Callable,
    dataset: str,
    n_examples: int,
    corruptions: Optional[Sequence[str]] = None,
    severities: Sequence[int] = SEVERITIES,
    data_dir: Optional[str] = None,
    batch_size: int = 128,
) -> dict:
    """Accuracy of `model` on each corruption and severity.

    Args:
        model: Callable returning logits for [0, 1] images.
        dataset: The clean dataset's name (`cifar10` or `imagenet2012`).
        n_examples: Test examples per corruption and severity.
        corruptions: Corruption names (default: the 15 benchmark ones).
        severities: Severities to evaluate.
        data_dir: tfds data directory.
        batch_size: Batch size.

    Returns:
        JSON-ready dict: `accuracy[corruption][severity]`,
        `per_corruption` (mean over severities), `mCA`, and the settings.

    Example:

    ```python
    result = corruption_accuracy(model, "cifar10", n_examples=1000)
    print(result["mCA"], result["per_corruption"]["fog"])
    ```
    """
    if dataset not in CORRUPTED_VERSIONS:
        raise ValueError(
            f"No corrupted version of this dataset. Expected one of "
            f"{sorted(CORRUPTED_VERSIONS)}. Received: dataset={dataset!r}"
        )
    name, split, known = CORRUPTED_VERSIONS[dataset]
    corruptions = tuple(corruptions or known)
    unknown = [c for c in corruptions if c not in known]
    bad_severity = [s for s in severities if s not in SEVERITIES]
    if unknown or bad_severity or not severities:
        raise ValueError(
            f"Corruptions must be in {known} and severities in {SEVERITIES}. "
            f"Received: corruptions={unknown or corruptions}, severities={tuple(severities)}"
        )
    if n_examples < 1:
        raise ValueError(f"`n_examples` must be >= 1. Received: n_examples={n_examples}")
    accuracy: dict = {}
    counts = set()
    for corruption in corruptions:
        accuracy[corruption] = {}
        for severity in severities:
            hits = total = 0
            for x, y in _load(
                f"{name}/{corruption}_{severity}", split, n_examples, data_dir, batch_size
            ):
                pred = np.argmax(np.asarray(model(x, training=False)), axis=1)
                hits += int((pred == y.numpy()).sum())
                total += int(len(y))
            counts.add(total)
            accuracy[corruption][str(severity)] = hits / total
    per_corruption = {c: float(np.mean(list(v.values()))) for c, v in accuracy.items()}
    return {
        "dataset": name,
        "n_per_config": sorted(counts),
        "severities": list(severities),
        "accuracy": accuracy,
        "per_corruption": per_corruption,
        "mCA": float(np.mean(list(per_corruption.values()))),
    }
