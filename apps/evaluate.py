"""Robustness evaluation of a saved classifier, from flags.

Usage:
  python apps/evaluate.py --model=runs/quickstart/model.keras --suite=quick \\
      --output_dir=runs/quickstart/eval
  python apps/evaluate.py --flagfile=configs/eval.cfg --suite=standard
  python apps/evaluate.py --model=runs/quickstart/model.keras --dataset=digits \\
      --corruptions=all --suite=none --output_dir=runs/quickstart/corruptions

`--model` is a `.keras` file (loaded with `safe_mode=True`) or a SavedModel
directory (its `serve_float`, `serve` or `serving_default` endpoint; a
`logits` output is used when the endpoint returns several). The model must map
[0, 1] images to logits. Every flag is checked before any compute, and an
invalid one stops the run with one message naming the value (exit code 2)
and nothing written. Results go to `output_dir` (default: `eval/` beside the
model, as `make run` writes them): report.json, report.md and
PNG figures. The test examples are read `--chunk_size` at a time (one pass
first checks them all), so memory does not grow with `--n_examples`.

`--corruptions` adds the common-corruption benchmark (accuracy per
corruption and severity, mCA, and mCE against `--reference_model`): the test
images corrupted here (`--corruption_source=generated`, offline, any
dataset) or CIFAR-10-C / ImageNet-C from tfds (`--corruption_source=tfds`).
It writes corruptions.json, corruptions.md and corruption_heatmap.png, and
its summary goes into report.json when an attack suite runs too
(`--suite=none` runs none).
"""

from __future__ import annotations

import os

# Before TensorFlow loads (importing he_keras loads it): its C++ start-up logs stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from absl import flags

from he_keras import cli
from he_keras.defaults import default_eps

# The library's TensorFlow parts are imported inside the functions that use
# them, after the flags are parsed: under another Keras backend that import
# raises `BackendError`, which `cli.run` turns into one `error:` line.

if TYPE_CHECKING:
    from he_keras.evaluation.corruption_selection import CorruptionSettings

_MODEL = flags.DEFINE_string("model", None, "Path of a .keras file or a SavedModel directory.")
_DATASET = flags.DEFINE_string(
    "dataset", "digits", "digits, mnist5k, or a tfds dataset: mnist, cifar10, cifar100, svhn_cropped, imagenette[/<config>], imagenet2012."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_SUITE = flags.DEFINE_enum(
    "suite", "quick", ["quick", "standard", "full", "none"],
    "Attack preset; none runs no attack (then --corruptions is required).",
)
_N_EXAMPLES = flags.DEFINE_integer(
    "n_examples", 1000, "Evaluate the first N test examples (all of them if the split is smaller)."
)
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", 1000,
    "Test examples in memory at a time: the attacks, curves and corruptions run chunk by "
    "chunk and their per-point outcomes are merged.",
)
_EPS = flags.DEFINE_float(
    "eps", None, "Threat-model radius in pixel units; default 0.3 for digit datasets, 8/255 otherwise."
)
_NORM = flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "Threat-model norm.")
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of every attack and corruption (same seed, same report)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Points per attack call.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory of report.json, report.md and figures; default: eval/ beside --model."
)
_SOURCE_MODEL = flags.DEFINE_string(
    "source_model", None, "Substitute model (.keras or SavedModel) for the transfer attack (full suite)."
)
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads.")
_INTRA_OP = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0 = all cores).")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "1 shows progress bars, 0 is silent.")
_CORRUPTIONS = flags.DEFINE_string(
    "corruptions", None,
    "Common-corruption benchmark: 'all' (every corruption that applies to the images) or a "
    "comma list, e.g. fog,contrast. Generated: gaussian_noise, shot_noise, impulse_noise, "
    "defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog, brightness, contrast, "
    "elastic_transform, pixelate, jpeg_compression and the held-out speckle_noise, "
    "gaussian_blur, spatter, saturate; tfds: as its builder spells them.",
)
_SEVERITIES = flags.DEFINE_list("severities", "1,2,3,4,5", "Corruption severities, in 1-5.")
_CORRUPTION_SOURCE = flags.DEFINE_enum(
    "corruption_source", "generated", ["generated", "tfds"],
    "generated: corrupt the test images here (offline, any dataset); tfds: read "
    "cifar10_corrupted / imagenet2012_corrupted from --data_dir.",
)
_REFERENCE_MODEL = flags.DEFINE_string(
    "reference_model", None,
    "Reference model (.keras or SavedModel) of the corruption errors CE / mCE and relative mCE.",
)

flags.mark_flags_as_required(["model"])
# Flags that only the corruption benchmark reads.
CORRUPTION_FLAGS = ("severities", "corruption_source", "reference_model")


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


def validate_corruption_flags() -> tuple[Optional[CorruptionSettings], Optional[str]]:
    """Checks `--corruptions` and the flags that only it reads.

    Returns:
        The `CorruptionSettings` (None without `--corruptions`) and the
        resolved reference-model path (or None).
    """
    if _CORRUPTIONS.value is None:
        if _SUITE.value == "none":
            raise FlagError("--suite=none runs no attack: pass --corruptions to evaluate something")
        for name in CORRUPTION_FLAGS:
            if flags.FLAGS[name].present:
                raise FlagError(f"--{name} is only read by the corruption benchmark: pass --corruptions")
        return None, None
    from he_keras.evaluation.corruption_selection import corruption_settings

    try:
        settings = corruption_settings(
            _CORRUPTIONS.value, _SEVERITIES.value, _CORRUPTION_SOURCE.value, _DATASET.value
        )
    except ValueError as err:
        raise FlagError(str(err)) from err
    reference = None
    if _REFERENCE_MODEL.value:
        reference = resolve_model_path("reference_model", _REFERENCE_MODEL.value)
    return settings, reference


def validate_flags() -> tuple[
    float, str, Optional[str], Optional[CorruptionSettings], Optional[str], str
]:
    """Checks every flag that needs no model or data.

    Returns:
        The eps to use, the resolved model and source-model paths, the
        corruption settings (None without `--corruptions`), the resolved
        reference-model path and the output directory (`--output_dir`, or
        `eval/` beside the model).
    """
    if _N_EXAMPLES.value < 1:
        raise FlagError(f"--n_examples must be >= 1. Received: --n_examples={_N_EXAMPLES.value}")
    if _CHUNK_SIZE.value < 1:
        raise FlagError(f"--chunk_size must be >= 1. Received: --chunk_size={_CHUNK_SIZE.value}")
    if _BATCH_SIZE.value < 1:
        raise FlagError(f"--batch_size must be >= 1. Received: --batch_size={_BATCH_SIZE.value}")
    if _SEED.value < 0:
        raise FlagError(f"--seed must be >= 0. Received: --seed={_SEED.value}")
    eps = _EPS.value
    if eps is None:
        eps = default_eps(_DATASET.value)
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
    corruptions, reference = validate_corruption_flags()
    output_dir = _OUTPUT_DIR.value or os.path.join(os.path.dirname(os.path.normpath(model)), "eval")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FlagError(f"--output_dir={output_dir!r} is a file, not a directory")
    return eps, model, source, corruptions, reference, output_dir


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


def run_corruptions(
    settings: CorruptionSettings, model: Any, reference: Any,
    chunks: Callable[[], Iterable[tuple]], n: int,
) -> dict:
    """Runs the corruption benchmark of the flags on the test images.

    Args:
        settings: The `CorruptionSettings` of the flags.
        model: The evaluated model.
        reference: The reference model, or None.
        chunks: Returns the clean test `(images, labels)` chunks.
        n: The number of test examples.

    Returns:
        The corruption report.

    Raises:
        FlagError: if the tfds corrupted dataset cannot be read.
    """
    from he_keras.evaluation import corruption_selection
    from he_keras.evaluation import corruptions as corruptions_lib

    common = dict(
        severities=settings.severities, batch_size=_BATCH_SIZE.value, reference_model=reference,
        model_name=os.path.basename(os.path.normpath(_MODEL.value)), verbose=_VERBOSE.value,
        reference_name=os.path.basename(os.path.normpath(_REFERENCE_MODEL.value or "reference")),
    )
    if settings.source == "generated":
        return corruptions_lib.corruption_benchmark_chunks(
            model, chunks, settings.corruptions, seed=_SEED.value, dataset=_DATASET.value, **common
        )
    # `all` is every corruption the builder has, held-out ones included.
    names, _ = corruption_selection.select_corruptions("tfds", _DATASET.value, settings.corruptions)
    try:
        return corruptions_lib.corruption_accuracy(
            model, _DATASET.value, n, names, data_dir=_DATA_DIR.value, clean=chunks, **common
        )
    except Exception as err:  # tfds raises many types when data is missing offline.
        raise FlagError(
            f"--corruption_source=tfds: {corruption_selection.corrupted_version(_DATASET.value)} "
            f"could not be read from --data_dir={_DATA_DIR.value}: {type(err).__name__}: {err}"
        ) from err


def run(
    eps: float, model_path: str, source_path: Optional[str],
    corruptions: Optional[CorruptionSettings],
    reference_path: Optional[str],
    output_dir: str,
) -> None:
    """Loads data and models, evaluates, writes the reports, prints a summary.

    Args:
        eps: Threat-model radius.
        model_path: Resolved path of the evaluated model.
        source_path: Resolved path of the transfer source model, or None.
        corruptions: The `CorruptionSettings` of the flags, or None.
        reference_path: Resolved path of the corruption reference model, or None.
        output_dir: Directory of the reports.
    """
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.config.threading.set_intra_op_parallelism_threads(_INTRA_OP.value)
    from he_keras.data import load_dataset, test_batches
    from he_keras.evaluation import evaluate_chunks, write_corruption_report, write_report
    from he_keras.evaluation.corruption_selection import select_corruptions
    from he_keras.evaluation.corruption_report import corruption_table

    try:
        data = load_dataset(_DATASET.value, data_dir=_DATA_DIR.value)
    except Exception as err:  # Unknown names, and tfds errors for data missing offline.
        raise FlagError(f"--dataset={_DATASET.value!r}: {err}") from err
    if corruptions is not None:
        try:  # A named corruption that cannot run on these images stops here.
            select_corruptions(
                corruptions.source, _DATASET.value, corruptions.corruptions,
                corruptions.severities, data.input_shape,
            )
        except ValueError as err:
            raise FlagError(f"--dataset={_DATASET.value}: {err}") from err
    model = load_classifier("model", model_path, data.input_shape, data.num_classes)
    source = None
    if source_path:
        source = load_classifier("source_model", source_path, data.input_shape, data.num_classes)
    reference = None
    if reference_path:
        reference = load_classifier("reference_model", reference_path, data.input_shape, data.num_classes)

    def chunks() -> Iterable[tuple]:
        return test_batches(data, _N_EXAMPLES.value, _CHUNK_SIZE.value)

    # One pass checks every test image and label before any attack runs.
    n = sum(len(y) for _, y in chunks())
    if n == 0:
        raise FlagError(f"--dataset={_DATASET.value}: the test split is empty")
    result = None
    if corruptions is not None:
        result = run_corruptions(corruptions, model, reference, chunks, n)
    paths = []
    if _SUITE.value != "none":
        report = evaluate_chunks(
            model, chunks(), data.num_classes, suite=_SUITE.value, eps=eps, norm=_NORM.value,
            seed=_SEED.value, batch_size=_BATCH_SIZE.value, source_model=source,
            dataset=_DATASET.value, model_name=os.path.basename(os.path.normpath(_MODEL.value)),
            data_dir=_DATA_DIR.value, verbose=_VERBOSE.value,
        )
        if result is not None:
            report["corruptions"] = result
        paths += write_report(report, output_dir)
        print(summary_table(report))
    if result is not None:
        paths += write_corruption_report(result, output_dir)
        print(corruption_table(result))
    print(f"wrote {len(paths)} files to {output_dir}")


def main() -> None:
    """Validates the flags, then evaluates; bad values exit with code 2 (`he_keras.cli`)."""
    run(*validate_flags())


if __name__ == "__main__":
    cli.run(main)
