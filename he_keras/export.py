"""SavedModel export for TF Serving, with a model card.

`export_saved_model(model, base_dir)` writes `<base_dir>/<version>/`, the
layout TF Serving polls, with two signatures that both take a batch of images
under the input key `images`:

- `serving_default`: uint8 pixels in [0, 255] of the model's input shape
  (divided by 255 inside the graph);
- `serve_float`: float32 pixels in [0, 1] (the model's own input space).

Both return `probabilities` (softmax of the logits), `classes` (argmax) and
`logits`. The logits are the deployed model's own, so for an HE / m-HE head
the scale `s` is baked in and the probabilities are the softmax the model was
trained and evaluated with. The SavedModel loads with plain TensorFlow: the
custom layers are traced into the graph.

TF Serving does not check request shapes against the signature
(tensorflow/serving#1436), so each signature checks the shape in the graph,
and `serve_float` also checks that the pixels are finite and in [0, 1]; a
malformed request fails with `InvalidArgument` and a message naming the
problem instead of returning garbage.

The version directory is written under a temporary name and renamed into
place, so a server polling `base_dir` never sees a half-written version, and
an existing version is never overwritten. `model_card.json` inside the
version directory (TF Serving ignores it) records the head, `s`, `m`, `eps`,
the dataset, the training flags and the last evaluation.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from typing import Any, Optional

import keras
import tensorflow as tf

import he_keras
from he_keras.defaults import margin_of
from he_keras.files import write_json
from he_keras.models.heads import find_head, head_kind

SIGNATURE_UINT8 = "serving_default"
SIGNATURE_FLOAT = "serve_float"
INPUT_KEY = "images"
MODEL_CARD = "model_card.json"
CARD_FORMAT = "he_keras.model_card/1"


def image_shape(model: keras.Model) -> tuple[int, int, int]:
    """`(height, width, channels)` of a model with one fully defined image input.

    Raises:
        ValueError: if the model has no single rank-4 input of known size.
    """
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise ValueError(
            "Export needs a built model with exactly one image input. "
            f"Received a model with {len(inputs)} inputs"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            "The model input must be images (batch, height, width, channels) of "
            f"known size. Received input shape={shape}"
        )
    return shape[1:]


def next_version(base_dir: str) -> int:
    """1 + the largest integer-named version directory of `base_dir` (or 1)."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(n) for n in os.listdir(base_dir) if n.isdigit()]
    return max(versions, default=0) + 1


def resolve_version(base_dir: str, version: Optional[int] = None) -> int:
    """Checks the export target before anything is written.

    Args:
        base_dir: TF Serving's model base path.
        version: Requested version, or None for the next free one.

    Returns:
        The version to write.

    Raises:
        ValueError: if `base_dir` is a file, `version` is not a positive
            integer, or the version directory already exists.
    """
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise ValueError(
            f"The export directory exists and is not a directory: {base_dir!r}"
        )
    if version is None:
        return next_version(base_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1. Received: version={version!r}")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise ValueError(
            f"Version {version} already exists at {target!r}; exports never overwrite. "
            "Omit the version to use the next free one."
        )
    return version


def _serving_outputs(model: keras.Model, images: tf.Tensor) -> dict:
    logits = tf.cast(model(images, training=False), tf.float32)
    return {
        "probabilities": tf.nn.softmax(logits),
        "classes": tf.argmax(logits, axis=-1),
        "logits": logits,
    }


def _checked_shape(images: tf.Tensor, shape: tuple) -> tf.Tensor:
    """`images` after an in-graph check of its dynamic shape.

    Rank, batch size (at least 1) and image size are checked in one
    assertion on the zero-padded dynamic shape, so a request of the wrong
    rank gets the same clear message as one of the wrong size.
    """
    dynamic = tf.shape(images)
    padded = tf.concat([dynamic, tf.zeros([4], tf.int32)], axis=0)
    ok = tf.logical_and(
        tf.logical_and(tf.equal(tf.size(dynamic), 4), padded[0] >= 1),
        tf.reduce_all(tf.equal(padded[1:4], tf.constant(shape, tf.int32))),
    )
    expected = ", ".join(map(str, shape))
    check = tf.debugging.Assert(
        ok,
        [f"`images` must have shape (batch >= 1, {expected}); received", dynamic],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _checked_pixels(images: tf.Tensor) -> tf.Tensor:
    """`images` after in-graph checks: finite, then inside [0, 1]."""
    images = tf.debugging.check_numerics(images, "`images` must be finite (no NaN/inf)")
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    check = tf.debugging.Assert(
        tf.logical_and(low >= 0.0, high <= 1.0),
        ["`images` must lie in [0, 1] (float pixels); received min", low, "max", high],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    """The export archive with the `serving_default` and `serve_float` signatures.

    Args:
        model: A Keras classifier mapping [0, 1] images to logits.

    Returns:
        A `keras.export.ExportArchive` ready for `write_out`.
    """
    shape = image_shape(model)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_uint8(images: tf.Tensor) -> dict:
        images = _checked_shape(images, shape)
        return _serving_outputs(model, tf.cast(images, tf.float32) / 255.0)

    def serve_float(images: tf.Tensor) -> dict:
        images = _checked_pixels(_checked_shape(images, shape))
        return _serving_outputs(model, images)

    for name, fn, dtype in (
        (SIGNATURE_UINT8, serve_uint8, tf.uint8),
        (SIGNATURE_FLOAT, serve_float, tf.float32),
    ):
        spec = tf.TensorSpec((None, *shape), dtype, name=INPUT_KEY)
        archive.add_endpoint(name, fn, input_signature=[spec])
    return archive


def _evaluation_from_report(report: dict, path: str) -> dict:
    missing = {"clean_accuracy", "robust_accuracy", "settings", "attacks"} - set(report)
    if missing:
        raise ValueError(
            f"The evaluation report {path!r} is not a he_keras report (missing {sorted(missing)})"
        )
    settings = report["settings"]
    return {
        "source": path,
        "clean_accuracy": report["clean_accuracy"],
        "robust_accuracy": report["robust_accuracy"],
        "n_examples": settings.get("n"),
        "attack": {
            "name": f"per-point worst case of {len(report['attacks'])} attacks",
            "attacks": [a["name"] for a in report["attacks"]],
            "suite": settings.get("suite"),
            "eps": settings.get("eps"),
            "norm": settings.get("norm"),
            "seed": settings.get("seed"),
        },
    }


def _check_head(recorded: Optional[str], actual: str, what: str, path: str) -> None:
    if recorded not in (None, actual):
        raise ValueError(
            f"The {what} file {path!r} describes a model with head={recorded!r}, "
            f"but the exported model has head={actual!r}; pass the file of this model"
        )


def model_card(
    model: keras.Model,
    metrics: Optional[dict] = None,
    report: Optional[dict] = None,
    metrics_path: str = "",
    report_path: str = "",
) -> dict:
    """The model card: what the model is, how it was trained and evaluated.

    The evaluation is the last one: the evaluation report if given (it runs
    after training), else the final evaluation of the training run.

    Args:
        model: The exported classifier.
        metrics: The run's `metrics.json` (config and final test metrics).
        report: An evaluation `report.json`.
        metrics_path: Where `metrics` was read (recorded in the card).
        report_path: Where `report` was read (recorded in the card).

    Returns:
        A JSON-ready dictionary.

    Raises:
        ValueError: if the metrics or report describe another head than the
            model's, or the report lacks the accuracy fields.
    """
    head = head_kind(model)
    config = (metrics or {}).get("config", {})
    _check_head(config.get("head"), head, "metrics", metrics_path)
    evaluation = None
    if report is not None:
        _check_head(report.get("settings", {}).get("head"), head, "report", report_path)
        evaluation = _evaluation_from_report(report, report_path)
    elif metrics and "test" in metrics:
        test = metrics["test"]
        evaluation = {
            "source": metrics_path,
            "clean_accuracy": test["clean_accuracy"],
            "robust_accuracy": test["robust_accuracy"],
            "n_examples": test.get("n_examples"),
            "attack": test.get("attack"),
        }
    # Unknown without the run's config (the model does not store it).
    margin = None if config.get("m") is None else margin_of(head, config["m"])
    head_layer = find_head(model)
    return {
        "format": CARD_FORMAT,
        "model_name": model.name,
        "framework": config.get("framework"),
        "head": head,
        "s": None if head_layer is None else float(head_layer.scale.numpy()),
        "m": margin,
        "eps": config.get("eps"),
        "norm": config.get("norm"),
        "dataset": config.get("dataset"),
        "input_shape": list(image_shape(model)),
        "num_classes": int(model.outputs[0].shape[-1]),
        "signatures": {
            SIGNATURE_UINT8: {INPUT_KEY: "uint8 pixels in [0, 255]"},
            SIGNATURE_FLOAT: {INPUT_KEY: "float32 pixels in [0, 1]"},
            "outputs": ["probabilities", "classes", "logits"],
        },
        "training_flags": config or None,
        "evaluation": evaluation,
        "versions": {
            "he_keras": he_keras.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export_saved_model(
    model: keras.Model,
    base_dir: str,
    version: Optional[int] = None,
    card: Optional[dict[str, Any]] = None,
) -> str:
    """Writes `<base_dir>/<version>/` (SavedModel and model card) atomically.

    Args:
        model: A Keras classifier mapping [0, 1] images to logits.
        base_dir: TF Serving's model base path (created if missing).
        version: Version number; None takes the next free one.
        card: The model card (`model_card(model)` when None).

    Returns:
        The path of the version directory.

    Raises:
        ValueError: for a bad target (see `resolve_version`) or a model
            without one fully defined image input.

    Example:

    ```python
    path = export_saved_model(model, "serving/digits_he")
    served = tf.saved_model.load(path)
    served.signatures["serving_default"](images=tf.zeros([1, 8, 8, 1], tf.uint8))
    ```
    """
    version = resolve_version(base_dir, version)
    archive = serving_archive(model)
    card = model_card(model) if card is None else card
    # A dot-prefixed, non-numeric name that TF Serving ignores until the rename.
    staging = os.path.join(base_dir, f".tmp-{version}-{uuid.uuid4().hex}")
    target = os.path.join(base_dir, str(version))
    os.makedirs(staging)
    try:
        archive.write_out(staging, verbose=False)
        write_json(os.path.join(staging, MODEL_CARD), card)
        if os.path.exists(target):
            raise ValueError(f"Version directory appeared while exporting: {target!r}")
        os.rename(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return target
