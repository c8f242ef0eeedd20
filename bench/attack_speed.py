"""Attack speed on the small digits CNN, in one run on one model and batch.

Measures, on a small CNN trained cleanly on the embedded digits dataset:

- native PGD-20 (`he_keras.attacks.core.ProjectedGradientAttack`, one
  compiled loop) against CleverHans 4 PGD-20 (an eager Python loop around a
  compiled gradient) on the same batch; the target is native / CleverHans
  <= 0.5;
- APGD-CE (100 iterations) throughput in images per second;
- the wall time of the `standard` evaluation suite on the whole digits test
  split (360 images).

Every timing is the median of `--repeats` interleaved runs after one
warm-up run (which traces the compiled functions), in wall-clock and in
process-CPU seconds (the latter is less sensitive to other jobs on a shared
machine; the 1-minute load average is recorded). Prints a table and the
ratios, and writes them as JSON with `--output`.

Usage:
  python bench/attack_speed.py --repeats=5 --output=bench/attack_speed.json
"""

from __future__ import annotations

import json
import os
import statistics
import time


from absl import app, flags

_BATCH = flags.DEFINE_integer("batch_size", 128, "Images in the timed batch.")
_EPS = flags.DEFINE_float("eps", 0.3, "L-inf radius.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per attack (median reported).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Clean training epochs of the CNN.")
_SUITE = flags.DEFINE_boolean("suite", True, "Also time the standard suite on the test split.")
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def timed(fn) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call of `fn`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of each function, runs interleaved.

    Each function runs once to warm up (tracing), then the functions take
    turns `repeats` times, so that a change in machine load hits them alike.

    Args:
        fns: Name -> zero-argument callable.
        repeats: Timed rounds.

    Returns:
        Name -> `{"wall": median wall s, "cpu": median CPU s}`.
    """
    for fn in fns.values():
        fn()
    runs: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn))
    return {
        name: {"wall": statistics.median(w for w, _ in r), "cpu": statistics.median(c for _, c in r)}
        for name, r in runs.items()
    }


def main(argv):
    """Trains the CNN, times the attacks and the suite, prints the table."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import keras
    import numpy as np
    import tensorflow as tf
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.get_logger().setLevel("ERROR")
    from he_keras.attacks.apgd import APGD
    from he_keras.attacks.core import ProjectedGradientAttack
    from he_keras.data import load_dataset, to_numpy
    from he_keras.defaults import EVAL_PGD_STEPS, pgd_step_size
    from he_keras.evaluation import evaluate
    from he_keras.models import build_model

    data = load_dataset("digits")
    x_train, y_train = to_numpy(data.train)
    x_test, y_test = to_numpy(data.test)
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", data.input_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=64, epochs=_EPOCHS.value, verbose=0)

    eps, steps = _EPS.value, EVAL_PGD_STEPS
    step = pgd_step_size(eps, steps)
    x = tf.constant(x_test[: _BATCH.value])
    y = tf.constant(y_test[: _BATCH.value])
    native = ProjectedGradientAttack(eps=eps, step_size=step, steps=steps, seed=0)
    apgd = APGD(eps, loss="ce", steps=100, seed=0)
    times = interleaved_medians(
        {
            "native_pgd20": lambda: native(model, x, y).numpy(),
            "cleverhans_pgd20": lambda: projected_gradient_descent(
                model, x, eps, step, steps, np.inf, clip_min=0.0, clip_max=1.0, y=y,
                rand_init=True, sanity_checks=False,
            ).numpy(),
            "apgd_ce_100": lambda: apgd(model, x, y).numpy(),
        },
        _REPEATS.value,
    )
    n = int(x.shape[0])
    results = {"batch_size": n, "eps": eps, "inter_op_threads": _INTER_OP.value}
    for name, t in times.items():
        results[f"{name}_wall_seconds"] = t["wall"]
        results[f"{name}_cpu_seconds"] = t["cpu"]
    for clock in ("wall", "cpu"):
        results[f"native_over_cleverhans_{clock}"] = (
            times["native_pgd20"][clock] / times["cleverhans_pgd20"][clock]
        )
        results[f"apgd_ce_images_per_second_{clock}"] = n / times["apgd_ce_100"][clock]
    results["load_average_1min"] = os.getloadavg()[0]
    if _SUITE.value:
        start, cpu = time.perf_counter(), time.process_time()
        report = evaluate(model, x_test, y_test, data.num_classes, suite="standard", eps=eps, seed=0)
        results["standard_suite_wall_seconds"] = time.perf_counter() - start
        results["standard_suite_cpu_seconds"] = time.process_time() - cpu
        results["standard_suite_n"] = report["settings"]["n"]
        results["standard_suite_clean_accuracy"] = report["clean_accuracy"]
        results["standard_suite_robust_accuracy"] = report["robust_accuracy"]
    print(f"{'measure':<38}{'value':>12}")
    for key, value in results.items():
        print(f"{key:<38}{value:>12.4g}" if isinstance(value, float) else f"{key:<38}{value:>12}")
    for clock in ("wall", "cpu"):
        ratio = results[f"native_over_cleverhans_{clock}"]
        verdict = "meets" if ratio <= 0.5 else "misses"
        print(f"native / CleverHans PGD-20 ({clock} time) = {ratio:.2f} ({verdict} the <= 0.5 target)")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
