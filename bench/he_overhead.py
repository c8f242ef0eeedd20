"""Cost of the HE head and of PGD-AT, measured as ratios in one run.

Prints, on the same backbone and batch (CIFAR-shaped 32x32x3 inputs, random
pixels and labels: only the time matters here):

- HE / linear: the median time of one PGD-AT training step (PGD-10 + the
  weight update + metrics) with the HE head over the same with a linear head.
  The HE paper reports +0.9 % (target <= 1.01);
- PGD-AT / 11 standard steps: one PGD-AT (K = 10) step over 11 standard
  (clean) training steps, i.e. over the 11 forward-backward passes a PGD-10
  step makes. The attack's backward passes need no weight gradients, so the
  target is <= 0.8.

Steps of the compared variants are timed alternately (one of each per
repeat, in a rotating order) so that load changes on the machine hit all
alike; each ratio is the ratio of the medians. Absolute times swing 2-3x on a shared 2-core VM; the
ratios are what to compare.

Usage:
  python bench/he_overhead.py --repeats=15
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable


from absl import app, flags

_MODEL = flags.DEFINE_string("model", "small_cnn", "Backbone (he_keras.models.MODELS).")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Height and width of the inputs.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Images per training step.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed steps per variant (median).")
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads.")


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict:
    """Median seconds of each callable, timed alternately after one warm-up.

    The order of the callables rotates from one repeat to the next.

    Args:
        steps: Name -> callable running what is timed.
        repeats: Timed calls of each callable.

    Returns:
        Name -> median seconds.
    """
    for step in steps.values():
        step()
    names = list(steps)
    times: dict = {name: [] for name in names}
    for repeat in range(repeats):
        # Rotate the order so that no variant always runs right after the
        # same other one (switching models costs cache warm-up).
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def synthetic_batch(batch_size: int, image_size: int, seed: int = 0) -> tuple:
    """CIFAR-shaped random images in [0, 1] and labels, as tensors."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size).astype("int32")
    return tf.constant(x), tf.constant(y)


def make_trainer(framework: str, head: str, model: str, image_size: int, **params):
    """A compiled trainer (SGD 0.01, momentum 0.9) on a fresh backbone."""
    import keras

    from he_keras.defaults import DEFAULT_SCALE
    from he_keras.models import build_model
    from he_keras.training import FRAMEWORKS

    keras.utils.set_random_seed(0)
    classifier = build_model(model, (image_size, image_size, 3), 10, head=head, s=DEFAULT_SCALE)
    params.setdefault("eps", 8 / 255)
    trainer = FRAMEWORKS[framework](classifier, seed=0, **params)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return trainer


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.get_logger().setLevel("ERROR")
    x, y = synthetic_batch(_BATCH.value, _IMAGE.value)
    pgd = dict(step_size=2 / 255, steps=10)
    he = make_trainer("pgdat", "he", _MODEL.value, _IMAGE.value, **pgd)
    linear = make_trainer("pgdat", "linear", _MODEL.value, _IMAGE.value, **pgd)
    standard = make_trainer("standard", "linear", _MODEL.value, _IMAGE.value)

    def eleven_standard_steps():
        for _ in range(11):
            standard.train_on_batch(x, y)

    medians = interleaved_medians(
        {
            "pgdat_he": lambda: he.train_on_batch(x, y),
            "pgdat_linear": lambda: linear.train_on_batch(x, y),
            "standard_x11": eleven_standard_steps,
        },
        _REPEATS.value,
    )
    print(f"backbone {_MODEL.value}, batch {_BATCH.value} x {_IMAGE.value}x{_IMAGE.value}x3, "
          f"{_REPEATS.value} interleaved repeats (median seconds):")
    for name, seconds in medians.items():
        print(f"  {name:14s} {seconds:8.4f}")
    he_ratio = medians["pgdat_he"] / medians["pgdat_linear"]
    at_ratio = medians["pgdat_linear"] / medians["standard_x11"]
    print(f"PGD-AT step, HE head / linear head:     {he_ratio:.4f}  (paper +0.9 %; target <= 1.01)")
    print(f"PGD-AT (K=10) step / 11 standard steps: {at_ratio:.4f}  (target <= 0.8)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
