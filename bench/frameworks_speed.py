"""Speed of the fast AT frameworks and of MirroredStrategy, as ratios in one run.

On the same backbone and CIFAR-shaped random data (only time matters), prints:

- FastAT+HE / FastAT: median time of one FastAT training step with the HE
  head over the same with a linear head (target <= 1.01);
- FreeAT / standard: total `fit` time of FreeAT with m = 4 replays for
  `epochs / 4` passes over the total time of standard training for `epochs`
  (the same nominal epochs; target <= 1.1);
- MirroredStrategy on 2 logical CPU devices / 1 device: PGD-AT+HE training
  throughput (images per second) of the two (both devices share the same 2
  physical cores here, so this measures the overhead of the replication, not
  a speed-up).

Step timings alternate between the compared variants (rotating order); the
totals run the pair alternately `--repeats_total` times (alternating which
goes first) and take medians. Every `fit` is
warmed up (traced) once before timing.

Usage:
  python bench/frameworks_speed.py --repeats=15 --repeats_total=3
"""

from __future__ import annotations

import os
import statistics
import time


from absl import app, flags

# Defines --model, --image_size, --batch_size, --repeats, --inter_op_threads.
from he_overhead import interleaved_medians, make_trainer, synthetic_batch

FLAGS = flags.FLAGS
_EXAMPLES = flags.DEFINE_integer("examples", 1024, "Training examples of the total-time runs.")
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Nominal epochs of the FreeAT / standard comparison.")
_REPLAYS = flags.DEFINE_integer("replays", 4, "FreeAT replays m.")
_REPEATS_TOTAL = flags.DEFINE_integer("repeats_total", 3, "Timed runs of each total (median).")


def timed_fit(trainer, dataset, epochs: int) -> float:
    """Seconds of `trainer.fit(dataset, epochs=epochs)`."""
    start = time.perf_counter()
    trainer.fit(dataset, epochs=epochs, shuffle=False, verbose=0)
    return time.perf_counter() - start


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    # Two logical CPU devices for the MirroredStrategy measurement (before
    # TensorFlow initializes its devices).
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    tf.get_logger().setLevel("ERROR")
    from he_keras.runs.build import make_strategy

    model, size, batch = FLAGS.model, FLAGS.image_size, FLAGS.batch_size
    x, y = synthetic_batch(batch, size)
    results = {}

    # FastAT+HE vs FastAT: one step each, alternately.
    fast_he = make_trainer("fastat", "he", model, size)
    fast = make_trainer("fastat", "linear", model, size)
    steps = interleaved_medians(
        {"fastat_he": lambda: fast_he.train_on_batch(x, y), "fastat": lambda: fast.train_on_batch(x, y)},
        FLAGS.repeats,
    )
    results["FastAT+HE / FastAT step time"] = (steps["fastat_he"] / steps["fastat"], "<= 1.01")

    # FreeAT (m replays, epochs/m passes) vs standard training (epochs).
    xs, ys = synthetic_batch(_EXAMPLES.value, size, seed=1)
    data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch).cache()
    passes = -(-_EPOCHS.value // _REPLAYS.value)
    free = make_trainer("freeat", "he", model, size, replays=_REPLAYS.value)
    standard = make_trainer("standard", "he", model, size)
    for trainer in (free, standard):
        trainer.fit(data.take(1), epochs=1, verbose=0)
    totals = {"freeat": [], "standard": []}
    for repeat in range(_REPEATS_TOTAL.value):
        runs = [("freeat", free, passes), ("standard", standard, _EPOCHS.value)]
        for name, trainer, epochs in runs[repeat % 2 :] + runs[: repeat % 2]:
            totals[name].append(timed_fit(trainer, data, epochs))
    free_total, standard_total = (statistics.median(totals[k]) for k in ("freeat", "standard"))
    results[
        f"FreeAT (m={_REPLAYS.value}, {passes} passes) / standard ({_EPOCHS.value} epochs) total time"
    ] = (free_total / standard_total, "<= 1.1")

    # MirroredStrategy on 2 logical CPUs vs one device: PGD-AT+HE throughput.
    pgd = dict(step_size=2 / 255, steps=10)
    single = make_trainer("pgdat", "he", model, size, **pgd)
    with make_strategy("mirrored").scope():
        mirrored = make_trainer("pgdat", "he", model, size, **pgd)
    step_data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch, drop_remainder=True).take(2).cache()
    for trainer in (single, mirrored):
        trainer.fit(step_data, epochs=1, verbose=0)
    times = {"mirrored": [], "single": []}
    for repeat in range(_REPEATS_TOTAL.value):
        runs = [("single", single), ("mirrored", mirrored)]
        for name, trainer in runs[repeat % 2 :] + runs[: repeat % 2]:
            times[name].append(timed_fit(trainer, step_data, 2))
    images = 4 * batch
    throughput = {k: images / statistics.median(v) for k, v in times.items()}
    results["MirroredStrategy 2 logical CPUs / 1 device, PGD-AT+HE throughput"] = (
        throughput["mirrored"] / throughput["single"], "(2 logical devices share 2 cores)")

    print(f"backbone {model}, batch {batch} x {size}x{size}x3")
    print(f"  FastAT step medians: HE {steps['fastat_he']:.4f} s, linear {steps['fastat']:.4f} s")
    print(f"  totals: FreeAT {free_total:.2f} s, standard {standard_total:.2f} s")
    print(f"  PGD-AT+HE throughput: 1 device {throughput['single']:.1f} img/s, "
          f"2 devices {throughput['mirrored']:.1f} img/s")
    for name, (ratio, target) in results.items():
        print(f"{name}: {ratio:.4f}  {target}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
