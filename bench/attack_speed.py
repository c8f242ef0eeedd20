"""Attack speed on the small digits CNN, in one run on one model and batch.

Measures, on a small CNN trained cleanly on the embedded digits dataset:

- native PGD-20 (`he_keras.attacks.core.ProjectedGradientAttack`, one
  compiled loop) against CleverHans 4 PGD-20 (an eager Python loop around a
  compiled gradient) on the same batch; the target is native / CleverHans
  <= 0.5;
- APGD-CE (100 iterations) throughput in images per second;
- the wall time of the `standard` evaluation suite on the whole digits test
  split (360 images).

Every timing is the median of `--repeats` runs after one warm-up run (which
traces the compiled functions). Prints a table and the ratios, and writes
them as JSON with `--output`.

Usage:
  python bench/attack_speed.py --repeats=5 --output=bench/attack_speed.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_BATCH = flags.DEFINE_integer("batch_size", 128, "Images in the timed batch.")
_EPS = flags.DEFINE_float("eps", 0.3, "L-inf radius.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per attack (median reported).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Clean training epochs of the CNN.")
_SUITE = flags.DEFINE_boolean("suite", True, "Also time the standard suite on the test split.")
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def median_seconds(fn, repeats: int) -> float:
    """Runs `fn` once to warm up, then returns the median of `repeats` timings."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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

    eps, steps = _EPS.value, 20
    step = eps / 10
    x = tf.constant(x_test[: _BATCH.value])
    y = tf.constant(y_test[: _BATCH.value])
    native = ProjectedGradientAttack(eps=eps, step_size=step, steps=steps, seed=0)
    t_native = median_seconds(lambda: native(model, x, y).numpy(), _REPEATS.value)
    t_cleverhans = median_seconds(
        lambda: projected_gradient_descent(
            model, x, eps, step, steps, np.inf, clip_min=0.0, clip_max=1.0, y=y,
            rand_init=True, sanity_checks=False,
        ).numpy(),
        _REPEATS.value,
    )
    apgd = APGD(eps, loss="ce", steps=100, seed=0)
    t_apgd = median_seconds(lambda: apgd(model, x, y).numpy(), _REPEATS.value)
    results = {
        "batch_size": int(x.shape[0]),
        "eps": eps,
        "inter_op_threads": _INTER_OP.value,
        "native_pgd20_seconds": t_native,
        "cleverhans_pgd20_seconds": t_cleverhans,
        "native_over_cleverhans": t_native / t_cleverhans,
        "apgd_ce_100_seconds": t_apgd,
        "apgd_ce_images_per_second": int(x.shape[0]) / t_apgd,
    }
    if _SUITE.value:
        start = time.perf_counter()
        report = evaluate(model, x_test, y_test, data.num_classes, suite="standard", eps=eps, seed=0)
        results["standard_suite_seconds"] = time.perf_counter() - start
        results["standard_suite_n"] = report["settings"]["n"]
        results["standard_suite_clean_accuracy"] = report["clean_accuracy"]
        results["standard_suite_robust_accuracy"] = report["robust_accuracy"]
    print(f"{'measure':<38}{'value':>12}")
    for key, value in results.items():
        print(f"{key:<38}{value:>12.4g}" if isinstance(value, float) else f"{key:<38}{value:>12}")
    ratio = results["native_over_cleverhans"]
    verdict = "meets" if ratio <= 0.5 else "misses"
    print(f"native / CleverHans PGD-20 = {ratio:.2f} ({verdict} the <= 0.5 target)")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
