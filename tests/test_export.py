"""SavedModel export: plain-TensorFlow serving, bad requests, the export app.

The served models are loaded in a subprocess in which `keras`, `tf_keras` and
`he_keras` cannot be imported, as on a TF Serving host.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import forkrun
from he_keras import export
from he_keras.models import build_model, find_head
from he_keras.runs import TrainConfig, run
from helpers import digits_arrays, undefended_digits_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADS = ("linear", "he", "mhe")
# An HE-LIS / HE-CMP schedule may leave the scale anywhere; the export must
# serve the current value, not the configured s=15.
SCALE = 9.5

SERVE_SCRIPT = r"""
import json
import sys

for name in ("keras", "tf_keras", "he_keras"):
    sys.modules[name] = None  # any import of them now raises ImportError

import numpy as np
import tensorflow as tf

requests = np.load(sys.argv[2])
results = {}
for head, export_dir in json.loads(sys.argv[1]).items():
    loaded = tf.saved_model.load(export_dir)
    served = {"signatures": sorted(loaded.signatures)}
    for signature, key in (("serving_default", "uint8"), ("serve_float", "float")):
        out = loaded.signatures[signature](images=tf.constant(requests[key]))
        served[signature] = {k: v.numpy().tolist() for k, v in out.items()}
    errors = {}
    for key in requests.files:
        if key.startswith("bad_"):
            x = requests[key]
            signature = "serving_default" if x.dtype == np.uint8 else "serve_float"
            try:
                loaded.signatures[signature](images=tf.constant(x))
                errors[key] = None
            except tf.errors.InvalidArgumentError as err:
                errors[key] = err.message
    served["errors"] = errors
    results[head] = served
results["imported"] = [n for n in ("keras", "tf_keras", "he_keras") if sys.modules.get(n)]
print(json.dumps(results))
"""

_, _, X_TEST, Y_TEST = digits_arrays()
UINT8 = np.round(X_TEST[:64] * 255).astype(np.uint8)
FLOAT = X_TEST[64:128]

# name -> (bad request, the words the InvalidArgument message must contain)
BAD_REQUESTS = {
    "bad_nan": (np.where(np.arange(64).reshape(1, 8, 8, 1) == 5, np.nan, 0.5).astype("float32"), "finite"),
    "bad_inf": (np.full((2, 8, 8, 1), np.inf, "float32"), "finite"),
    "bad_above_one": (np.full((1, 8, 8, 1), 1.5, "float32"), "must lie in [0, 1]"),
    "bad_negative": (np.full((1, 8, 8, 1), -0.1, "float32"), "must lie in [0, 1]"),
    "bad_channels": (np.zeros((1, 8, 8, 3), "float32"), "must have shape (batch >= 1, 8, 8, 1)"),
    "bad_size": (np.zeros((1, 16, 16, 1), "float32"), "must have shape (batch >= 1, 8, 8, 1)"),
    "bad_rank": (np.zeros((1, 8, 8), "float32"), "must have shape (batch >= 1, 8, 8, 1)"),
    "bad_empty": (np.zeros((0, 8, 8, 1), "float32"), "must have shape (batch >= 1, 8, 8, 1)"),
    "bad_uint8_channels": (np.zeros((1, 8, 8, 3), "uint8"), "must have shape (batch >= 1, 8, 8, 1)"),
}


def _trained_classifier(head):
    """A copy of the cached, briefly trained model, at the scale `SCALE`."""
    trained = undefended_digits_model(head, epochs=2)
    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    if head != "linear":
        find_head(model).scale.assign(SCALE)
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Exports one model per head, serves them in a plain-TF subprocess."""
    root = tmp_path_factory.mktemp("export")
    models, dirs = {}, {}
    for head in HEADS:
        models[head] = _trained_classifier(head)
        dirs[head] = export.export_saved_model(models[head], str(root / head))
    requests = str(root / "requests.npz")
    np.savez(requests, uint8=UINT8, float=FLOAT, **{k: v for k, (v, _) in BAD_REQUESTS.items()})
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, json.dumps(dirs), requests],
        capture_output=True, text=True, timeout=300, cwd=str(root),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return models, dirs, json.loads(proc.stdout.strip().splitlines()[-1])


def test_served_without_keras_or_he_keras(served):
    _, _, results = served
    assert results["imported"] == []
    for head in HEADS:
        assert results[head]["signatures"] == ["serve_float", "serving_default"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("signature", ["serving_default", "serve_float"])
def test_served_outputs_match_keras(served, head, signature):
    models, _, results = served
    x = UINT8.astype("float32") / 255.0 if signature == "serving_default" else FLOAT
    logits = models[head].predict(x, verbose=0)
    out = {k: np.asarray(v) for k, v in results[head][signature].items()}
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    assert np.abs(out["probabilities"] - probs).max() <= 1e-5
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out["classes"], np.argmax(out["logits"], axis=1))
    # The deployed probabilities are the softmax of the deployed logits.
    served_softmax = keras.ops.convert_to_numpy(keras.ops.softmax(out["logits"]))
    assert np.abs(out["probabilities"] - served_softmax).max() <= 1e-6
    # Confident, trained models: the comparison is not between near-uniform rows.
    assert out["probabilities"].max(axis=1).mean() > 0.5


@pytest.mark.parametrize("head", ["he", "mhe"])
def test_he_scale_is_baked_in(served, head):
    models, _, results = served
    layer = find_head(models[head])
    features = keras.Model(models[head].inputs, layer.input).predict(FLOAT, verbose=0)
    unscaled = keras.ops.convert_to_numpy(layer.angular_output(layer.cosine(features)))
    logits = np.asarray(results[head]["serve_float"]["logits"])
    np.testing.assert_allclose(logits, SCALE * unscaled, rtol=1e-5, atol=1e-4)
    assert export.model_card(models[head])["s"] == SCALE


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_is_invalid_argument(served, name):
    _, _, results = served
    message = results["he"]["errors"][name]
    assert message is not None, f"{name} was served instead of rejected"
    assert BAD_REQUESTS[name][1] in message


def test_saved_model_cli_lists_signatures(served):
    _, dirs, _ = served
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run(
        [cli, "show", "--dir", dirs["he"], "--all"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    for signature, dtype in (("serving_default", "DT_UINT8"), ("serve_float", "DT_FLOAT")):
        block = text.split(f"signature_def['{signature}']:")[1].split("signature_def[")[0]
        assert f"inputs['images'] tensor_info:\n        dtype: {dtype}\n        shape: (-1, 8, 8, 1)" in block
        for output in ("probabilities", "classes", "logits"):
            assert f"outputs['{output}']" in block
        assert "tensorflow/serving/predict" in block


def test_export_rejects_models_without_an_image_input(tmp_path):
    inputs = keras.Input((64,))
    flat = keras.Model(inputs, keras.layers.Dense(10)(inputs))
    with pytest.raises(ValueError, match="must be images"):
        export.export_saved_model(flat, str(tmp_path / "flat"))
    assert not os.path.exists(tmp_path / "flat")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished one-epoch training run and evaluation reports beside it."""
    out = str(tmp_path_factory.mktemp("run"))
    config = TrainConfig(
        n_train=128, epochs=1, steps=2, step_size=0.15, n_eval=32, eval_steps=3,
        output_dir=out, verbose=0, seed=1,
    )
    run(config)
    # The fields of he_keras.evaluation's report that the card reads.
    report = {
        "format": "he_keras.evaluation/1",
        "settings": {"suite": "quick", "head": "he", "n": 32, "eps": 0.25, "norm": "linf", "seed": 0},
        "clean_accuracy": 0.5,
        "robust_accuracy": 0.125,
        "attacks": [{"name": "FGSM"}, {"name": "PGD-20"}],
    }
    # Where apps/evaluate.py writes by default; it wins over a report.json beside the model.
    os.makedirs(os.path.join(out, "eval"))
    with open(os.path.join(out, "eval", "report.json"), "w") as f:
        json.dump(report, f)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(dict(report, clean_accuracy=0.9), f)
    return out


def _export_app(*args):
    return forkrun.run(
        [os.path.join(ROOT, "apps", "export.py"), *args],
        timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


def test_export_app_versions_and_model_card(run_dir, tmp_path):
    base = tmp_path / "serving"
    model = f"--model={run_dir}/model.keras"
    for _ in range(2):
        proc = _export_app(model, f"--output_dir={base}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(base)) == ["1", "2"]  # the next free version, never overwritten

    card = json.loads((base / "1" / "model_card.json").read_text())
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    assert (card["framework"], card["head"], card["s"], card["m"]) == ("pgdat", "he", 15.0, 0.2)
    assert (card["eps"], card["dataset"], card["input_shape"]) == (0.3, "digits", [8, 8, 1])
    assert card["training_flags"] == metrics["config"]
    # The evaluation report found in eval/ beside the model is the last evaluation.
    assert card["evaluation"]["clean_accuracy"] == 0.5
    assert card["evaluation"]["robust_accuracy"] == 0.125
    assert card["evaluation"]["attack"]["attacks"] == ["FGSM", "PGD-20"]
    assert card["evaluation"]["attack"]["eps"] == 0.25

    # Without a report, the run's final evaluation and its attack.
    without = export.model_card(keras.saving.load_model(f"{run_dir}/model.keras"), metrics)
    assert without["evaluation"]["robust_accuracy"] == metrics["test"]["robust_accuracy"]
    assert without["evaluation"]["attack"] == metrics["test"]["attack"]


def test_model_card_refuses_metrics_of_another_head(run_dir):
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    linear = build_model("small_cnn", (8, 8, 1), 10, head="linear")
    with pytest.raises(ValueError, match="head='he'.*head='linear'"):
        export.model_card(linear, metrics, metrics_path="metrics.json")
