"""Robustness evaluation of a saved classifier, from flags.

Usage:
  python apps/evaluate.py --model=runs/quickstart/model.keras --suite=quick \\
      --output_dir=runs/quickstart/eval
  python apps/evaluate.py --flagfile=configs/eval.cfg --suite=standard

`--model` is a `.keras` file (loaded with `safe_mode=True`) or a SavedModel
directory (its `serve_float`, `serve` or `serving_default` endpoint; a
`logits` output is used when the endpoint returns several). The model must map
[0, 1] images to logits. Every flag is checked before any compute, and an
invalid one stops the run with one message naming the value (exit code 2)
and nothing written. Results go to `output_dir`: report.json, report.md and
PNG figures.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "Path of a .keras file or a SavedModel directory.")
_DATASET = flags.DEFINE_string(
    "dataset", "digits", "digits, mnist5k, or a tfds dataset: mnist, cifar10, cifar100, svhn_cropped, imagenette[/<config>], imagenet2012."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_SUITE = flags.DEFINE_enum("suite", "quick", ["quick", "standard", "full"], "Evaluation preset.")
_N_EXAMPLES = flags.DEFINE_integer(
    "n_examples", 1000, "Evaluate the first N test examples (all of them if the split is smaller)."
)
_EPS = flags.DEFINE_float(
    "eps", None, "Threat-model radius in pixel units; default 0.3 for digit datasets, 8/255 otherwise."
)
_NORM = flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "Threat-model norm.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every attack (same seed, same report).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Points per attack call.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory of report.json, report.md and figures.")
_SOURCE_MODEL = flags.DEFINE_string(
    "source_model", None, "Substitute model (.keras or SavedModel) for the transfer attack (full suite)."
)
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads.")
_INTRA_OP = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0 = all cores).")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "1 shows progress bars, 0 is silent.")

flags.mark_flags_as_required(["model", "output_dir"])

DIGIT_DATASETS = ("digits", "mnist5k", "mnist")


class FlagError(ValueError):
    """An invalid command-line value."""


def resolve_model_path(flag: str, path: str) -> str:
    """Checks a model path (`he_keras.models.io.resolve_model_path`); a TF
    Serving base directory resolves to its highest numbered version."""
    from he_keras.models.io import resolve_model_path as resolve

    try:
        return resolve(path)
    except ValueError as err:
        raise FlagError(f"--{flag}: {err}") from err


def validate_flags() -> tuple[float, str, Optional[str]]:
    """Checks every flag that needs no model or data.

    Returns:
        The eps to use and the resolved model and source-model paths.
    """
    if _N_EXAMPLES.value < 1:
        raise FlagError(f"--n_examples must be >= 1. Received: --n_examples={_N_EXAMPLES.value}")
    if _BATCH_SIZE.value < 1:
        raise FlagError(f"--batch_size must be >= 1. Received: --batch_size={_BATCH_SIZE.value}")
    if _SEED.value < 0:
        raise FlagError(f"--seed must be >= 0. Received: --seed={_SEED.value}")
    eps = _EPS.value
    if eps is None:
        eps = 0.3 if _DATASET.value in DIGIT_DATASETS else 8 / 255
    bound = 1.0 if _NORM.value == "linf" else float("inf")
    if not 0.0 < eps <= bound:
        raise FlagError(
            f"--eps must lie in (0, {bound:g}] (pixel units) for --norm={_NORM.value}. "
            f"Received: --eps={eps:g}"
        )
    model = resolve_model_path("model", _MODEL.value)
    source = None
    if _SOURCE_MODEL.value:
        source = resolve_model_path("source_model", _SOURCE_MODEL.value)
    if os.path.exists(_OUTPUT_DIR.value) and not os.path.isdir(_OUTPUT_DIR.value):
        raise FlagError(f"--output_dir={_OUTPUT_DIR.value!r} is a file, not a directory")
    return eps, model, source


def load_classifier(flag: str, path: str, input_shape: tuple, num_classes: int):
    """Loads a `.keras` file or SavedModel and checks it maps images to logits.

    Args:
        flag: The flag the path came from (for messages).
        path: A `.keras` file or SavedModel directory.
        input_shape: The dataset's `(height, width, channels)`.
        num_classes: The dataset's number of classes.

    Returns:
        A Keras model `(batch, *input_shape) -> (batch, num_classes)` logits.

    Raises:
        FlagError: if the model cannot be loaded, its input shape differs
            from the dataset's, or it outputs probabilities or the wrong
            number of classes.
    """
    import numpy as np

    from he_keras.evaluation.checks import softmax_output_check
    from he_keras.models.io import load_model

    try:
        model = load_model(path, input_shape=input_shape)
    except ValueError as err:
        raise FlagError(f"--{flag}: {err}") from err
    got = tuple(model.input_shape[1:])
    if got != tuple(input_shape) and None not in got:
        raise FlagError(
            f"--{flag}={path!r} expects inputs of shape {got} but --dataset={_DATASET.value} "
            f"has images of shape {tuple(input_shape)}"
        )
    probe = np.full((2,) + tuple(input_shape), 0.5, np.float32)
    out = np.asarray(model(probe, training=False))
    if out.shape != (2, num_classes):
        raise FlagError(
            f"--{flag}={path!r} must return logits of shape (batch, {num_classes}) for "
            f"--dataset={_DATASET.value}. Received shape {out.shape[1:]} per example"
        )
    if softmax_output_check(out).flagged:
        raise FlagError(
            f"--{flag}={path!r} returns probabilities (rows in [0, 1] summing to 1); "
            "evaluate a model that returns logits"
        )
    return model


def summary_table(report: dict) -> str:
    """The plain-text summary printed at the end of a run."""
    rows = [("clean", report["clean_accuracy"], None, None)]
    rows += [
        (a["name"], a["accuracy"], a["cumulative_accuracy"], a["seconds"]) for a in report["attacks"]
    ]
    lines = [f"{'attack':<24}{'accuracy':>10}{'worst case so far':>20}{'time (s)':>10}"]
    for name, acc, cum, sec in rows:
        lines.append(
            f"{name:<24}{'—' if acc is None else f'{100 * acc:.2f}':>10}"
            f"{'' if cum is None else f'{100 * cum:.2f}':>20}{'' if sec is None else f'{sec:.1f}':>10}"
        )
    lines.append(f"{'worst case (all attacks)':<24}{100 * report['robust_accuracy']:>10.2f}")
    for name, value in report["headline"].items():
        lines.append(
            f"{name}: {100 * value:.2f}" if name.startswith("AutoAttack") else f"{name}: {value:.4f}"
        )
    for item in report["skipped_attacks"]:
        lines.append(f"skipped {item['name']}: {item['reason']}")
    if "skipped" in report.get("corruptions", {}):
        lines.append(f"skipped corruptions: {report['corruptions']['skipped']}")
    for check in report["checks"]:
        status = "FLAGGED" if check["status"] == "flagged" else check["status"]
        lines.append(f"check {check['name']}: {status}: {check['message']}")
    return "\n".join(lines)


def run(eps: float, model_path: str, source_path: Optional[str]) -> None:
    """Loads data and models, evaluates, writes the report, prints a summary.

    Args:
        eps: Threat-model radius.
        model_path: Resolved path of the evaluated model.
        source_path: Resolved path of the transfer source model, or None.
    """
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.config.threading.set_intra_op_parallelism_threads(_INTRA_OP.value)
    from he_keras.data import load_dataset, to_numpy
    from he_keras.evaluation import evaluate, write_report

    try:
        data = load_dataset(_DATASET.value, data_dir=_DATA_DIR.value)
    except Exception as err:  # Unknown names, and tfds errors for data missing offline.
        raise FlagError(f"--dataset={_DATASET.value!r}: {err}") from err
    model = load_classifier("model", model_path, data.input_shape, data.num_classes)
    source = None
    if source_path:
        source = load_classifier("source_model", source_path, data.input_shape, data.num_classes)
    x, y = to_numpy(data.test, limit=_N_EXAMPLES.value)
    report = evaluate(
        model, x, y, data.num_classes, suite=_SUITE.value, eps=eps, norm=_NORM.value,
        seed=_SEED.value, batch_size=_BATCH_SIZE.value, source_model=source,
        dataset=_DATASET.value, model_name=os.path.basename(os.path.normpath(_MODEL.value)),
        data_dir=_DATA_DIR.value, verbose=_VERBOSE.value,
    )
    paths = write_report(report, _OUTPUT_DIR.value)
    print(summary_table(report))
    print(f"wrote {len(paths)} files to {_OUTPUT_DIR.value}")


def main(argv):
    """Validates the flags, then evaluates; bad values exit with code 2."""
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    try:
        run(*validate_flags())
    except FlagError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
