"""Exports a trained classifier as a TF Serving SavedModel with a model card.

Usage:
  python apps/export.py --model=runs/quickstart/model.keras \\
      --output_dir=serving/digits_he
  python apps/export.py --model=runs/quickstart/model.keras \\
      --output_dir=serving/digits_he --report=runs/quickstart/eval/report.json

Writes `<output_dir>/<version>/` (TF Serving's model base path layout) with
the signatures `serving_default` (uint8 images in [0, 255]) and `serve_float`
(float32 images in [0, 1]), and `model_card.json` beside the SavedModel. The
card is filled from the run's `metrics.json` and, if present, an evaluation
`report.json` (defaults: `metrics.json` beside the model; `eval/report.json`
beside it, where apps/evaluate.py writes, else `report.json`). Every flag is checked
before anything is written; an existing version is never overwritten.
"""

from __future__ import annotations

import os

# Before TensorFlow loads (importing he_keras loads it): its C++ start-up logs stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from he_keras import cli

# The library's TensorFlow parts are imported inside `export`, after the flags
# are parsed: under another Keras backend that import raises `BackendError`,
# which `cli.run` turns into one `error:` line.

_MODEL = flags.DEFINE_string("model", None, "The classifier to export (.keras file).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Model base path: the version is written to <output_dir>/<version>/."
)
_VERSION = flags.DEFINE_integer(
    "version", None, "Version number (>= 1); default: the next free one.", lower_bound=1
)
_METRICS = flags.DEFINE_string(
    "metrics", None, "The training run's metrics.json; default: metrics.json beside --model."
)
_REPORT = flags.DEFINE_string(
    "report", None,
    "An evaluation report.json; default: eval/report.json beside --model (apps/evaluate.py's default), "
    "else report.json beside it."
)

flags.mark_flags_as_required(["model", "output_dir"])


def _json_beside_model(flag: flags.FlagHolder, *names: str) -> str:
    """The flag's path, or the first of `names` (relative to the model's directory) that exists, or ""."""
    if flag.value is not None:
        return flag.value
    for name in names:
        path = os.path.join(os.path.dirname(os.path.abspath(_MODEL.value)), name)
        if os.path.exists(path):
            return path
    return ""


def export() -> str:
    """Validates the flags, then writes the export; returns its directory."""
    from he_keras import export as export_lib
    from he_keras.files import read_json
    from he_keras.models.io import load_model

    version = export_lib.resolve_version(_OUTPUT_DIR.value, _VERSION.value)
    metrics_path = _json_beside_model(_METRICS, "metrics.json")
    report_path = _json_beside_model(_REPORT, os.path.join("eval", "report.json"), "report.json")
    metrics = read_json(metrics_path, "metrics") if metrics_path else None
    report = read_json(report_path, "evaluation report") if report_path else None
    model = load_model(_MODEL.value, saved_model=False)
    card = export_lib.model_card(model, metrics, report, metrics_path, report_path)
    return export_lib.export_saved_model(model, _OUTPUT_DIR.value, version, card)


def main() -> None:
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    path = export()
    print(f"exported {_MODEL.value} to {path} (signatures: serving_default uint8, serve_float)")


if __name__ == "__main__":
    cli.run(main)
