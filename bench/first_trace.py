"""Cost of a trainer's first training step (the trace) against its later steps.

In this process, for each framework named, builds the quickstart classifier
(small CNN + HE head, s = 15) and trainer (PGD-7 at eps 0.3, step 0.075, Adam
2e-3, optimizer built before the first call, as `he_keras.runs.run` does),
then times the first call of Keras' train function on a batch of 64 digits
(tracing, graph optimization and the step) and the median of `--steps` later
calls. Run it in fresh processes and alternate them when comparing two
checkouts (`--root`): the first trace is paid once per process, so only
fresh processes show it.

Usage (from the repository root):
  python bench/first_trace.py --frameworks=PGDAT,TRADES
  python bench/first_trace.py --root=/path/to/other/checkout
"""

from __future__ import annotations

import statistics
import sys
import time

from absl import app, flags

_ROOT = flags.DEFINE_string("root", None, "Checkout whose he_keras to import (default: the installed one).")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["PGDAT"], "he_keras.training classes to time, in order.")
_STEPS = flags.DEFINE_integer("steps", 20, "Later steps timed after the first.")


def main(argv):
    del argv
    if _ROOT.value:
        sys.path.insert(0, _ROOT.value)
    import keras
    import tensorflow as tf

    from he_keras import training
    from he_keras.data import load_dataset, to_numpy
    from he_keras.models import build_model

    keras.utils.set_random_seed(0)
    data = load_dataset("digits")
    x, y = to_numpy(data.train)
    batches = iter(tf.data.Dataset.from_tensors((x[:64], y[:64])).repeat())
    for name in _FRAMEWORKS.value:
        classifier = build_model("small_cnn", data.input_shape, 10, head="he", s=15.0)
        trainer = getattr(training, name)(classifier, eps=0.3, step_size=0.075, steps=7, seed=0)
        trainer.compile(optimizer=keras.optimizers.Adam(2e-3))
        trainer.build((None, *data.input_shape))
        trainer.optimizer.build(trainer.trainable_variables)
        trainer.make_train_function()
        step = trainer.train_function
        started = time.perf_counter()
        float(step(batches)["loss"])
        first = time.perf_counter() - started
        later = []
        for _ in range(_STEPS.value):
            started = time.perf_counter()
            float(step(batches)["loss"])
            later.append(time.perf_counter() - started)
        print(f"{name}: first step {first:.2f} s, later steps {1e3 * statistics.median(later):.1f} ms "
              f"(median of {len(later)})", flush=True)


if __name__ == "__main__":
    app.run(main)
