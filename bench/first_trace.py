"""Cost of a trainer's first training step (the trace) against its later steps.

In this process, for each framework named, builds the quickstart classifier
(small CNN + HE head, s = 15) and trainer (PGD-7 at eps 0.3, step 0.075, Adam
2e-3, optimizer built before the first call, as `he_keras.runs.run` does),
then times the first call of Keras' train function on a batch of 64 digits,
split into tracing (the Python of `train_step`) and the rest (graph
optimization, kernel set-up and the step), and the median of `--steps` later
calls. With `--kernels=K` it then profiles `--steps` more calls and prints
the K kernels that took longest, in ms and calls per step
(`he_keras.profiling.kernel_times`; a function call's event, such as
`PartitionedCallOp` or the executor's `Process`, spans the kernels it ran).
Run it in fresh processes and alternate them when comparing two checkouts
(`--root`): the first trace is paid once per process, so only fresh
processes show it.

Usage (from the repository root):
  python bench/first_trace.py --frameworks=PGDAT,TRADES
  python bench/first_trace.py --root=/path/to/other/checkout
  python bench/first_trace.py --steps=40 --kernels=12
"""

from __future__ import annotations

import statistics
import sys
import time

from absl import app, flags

_ROOT = flags.DEFINE_string("root", None, "Checkout whose he_keras to import (default: the installed one).")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["PGDAT"], "he_keras.training classes to time, in order.")
_STEPS = flags.DEFINE_integer("steps", 20, "Later steps timed after the first (and profiled with --kernels).")
_KERNELS = flags.DEFINE_integer("kernels", 0, "Print the longest-running kernels of the later steps, this many.")


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
        traced = []
        train_step = trainer.train_step

        def timed_train_step(data, train_step=train_step, traced=traced):
            # Runs only while the train function is traced.
            began = time.perf_counter()
            outputs = train_step(data)
            traced.append(time.perf_counter() - began)
            return outputs

        trainer.train_step = timed_train_step
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
        print(f"{name}: first step {first:.2f} s (tracing {sum(traced):.2f} s, the rest "
              f"{first - sum(traced):.2f} s), later steps {1e3 * statistics.median(later):.1f} ms "
              f"(median of {len(later)})", flush=True)
        if _KERNELS.value:
            from he_keras.profiling import kernel_times

            times = kernel_times(lambda: [float(step(batches)["loss"]) for _ in range(_STEPS.value)])
            for kernel, total in sorted(times.items(), key=lambda item: -item[1].seconds)[:_KERNELS.value]:
                print(f"  {kernel:40s} {1e3 * total.seconds / _STEPS.value:7.3f} ms "
                      f"{total.calls / _STEPS.value:6.1f} calls per step", flush=True)


if __name__ == "__main__":
    app.run(main)
