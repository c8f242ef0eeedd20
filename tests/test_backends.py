"""The HE head and its losses on TensorFlow, JAX and PyTorch.

`backend_checks.run_checks` runs once in this (TensorFlow) process and once
per other backend in a subprocess with `KERAS_BACKEND` set (one process per
backend: each backend import costs seconds). PyTorch is skipped when torch
is not installed.
"""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import backend_checks
from he_keras import CosineMarginLoss, HypersphereDense
from he_keras.backends import TENSORFLOW_ONLY, require_tensorflow

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOGIT_ATOL = 5e-5  # Logits up to 15·pi (m-HE) in float32: ulps of 1-2e-6, several ops deep.
LOSS_ATOL = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("backends")
    inputs = np.random.default_rng(5).normal(size=(32, 16)).astype("float32")
    np.save(path / "inputs.npy", inputs)
    return path


def _run_subprocess(backend: str, workdir: pathlib.Path) -> dict:
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    script = pathlib.Path(backend_checks.__file__)
    proc = subprocess.run(
        [sys.executable, str(script), str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((workdir / f"{backend}.json").read_text())


@pytest.fixture(scope="module")
def runs(workdir):
    """Results by backend, each run once; TensorFlow's first (its `.keras` files)."""
    results = {"tensorflow": backend_checks.run_checks(str(workdir))}

    def get(backend: str) -> dict:
        if backend not in results:
            if importlib.util.find_spec(backend) is None:
                pytest.skip(f"{backend} is not installed")
            results[backend] = _run_subprocess(backend, workdir)
        return results[backend]

    return get


@pytest.fixture(params=["tensorflow", "jax", "torch"])
def run(request, runs):
    return runs(request.param)


@pytest.fixture(params=["jax", "torch"])
def other_run(request, runs):
    """A run under a backend other than TensorFlow, in a subprocess."""
    return runs(request.param)


def test_importing_he_keras_does_not_import_tensorflow(other_run):
    assert other_run["tensorflow_imported_by_he_keras"] is False


def test_tensorflow_only_modules_refuse_to_import(other_run):
    errors = other_run["tensorflow_only_import_errors"]
    assert sorted(errors) == sorted(TENSORFLOW_ONLY)
    for name, error in errors.items():
        assert error is not None, f"{name} imported under {other_run['backend']}"
        assert f"{name} needs the TensorFlow backend" in error
        assert repr(other_run["backend"]) in error


def test_train_app_under_another_backend_ends_in_one_error_line(other_run):
    app = other_run["train_app"]
    lines = app["stderr"].strip().splitlines()
    assert app["exit"] == 2 and "Traceback" not in app["stderr"], app["stderr"][-3000:]
    assert re.match(r"error: he_keras\.\w+ needs the TensorFlow backend", lines[-1]), lines[-3:]
    assert not app["wrote"]


def test_outputs_and_losses_equal_numpy(run):
    errors = run["errors"]
    assert errors["he_logits"] < LOGIT_ATOL  # s * cos(theta)
    assert errors["mhe_logits"] < LOGIT_ATOL  # -s * theta
    for name in (
        "cosine_margin_loss",
        "cross_entropy",
        "margin_cross_entropy",
        "kl_divergence",
        "cw_margin",
        "dlr",
        "targeted_dlr",
    ):
        assert errors[name] < LOSS_ATOL, name


def test_keras_file_saved_by_tensorflow_loads_here(other_run):
    for head in backend_checks.HEADS:
        assert other_run["loaded"][head] < LOGIT_ATOL
        loss = other_run["loaded"][f"{head}_loss"]
        assert (loss["m"], loss["s"]) == (backend_checks.MARGIN, 15.0)


def test_keras_file_saved_here_loads_under_tensorflow(other_run, workdir):
    inputs = np.load(workdir / "inputs.npy")
    for head in backend_checks.HEADS:
        model = keras.saving.load_model(workdir / f"{other_run['backend']}_{head}.keras")
        expected = np.load(workdir / f"{other_run['backend']}_{head}.npy")
        np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=LOGIT_ATOL)
        assert isinstance(model.loss, CosineMarginLoss)


def test_fit_lowers_the_cosine_margin_loss(run):
    fits = {**run["fit"], "small_cnn": run["backbone_fit"]}
    for model, (before, after) in fits.items():
        assert after < 0.2 * before, (model, before, after)


def test_scale_changes_between_epochs_without_retracing(run):
    schedule = run["schedule"]
    # Each epoch's loss is the margin loss at that epoch's scale, so both the
    # logits s*cos(theta) and the margin s*m followed the head's variable.
    np.testing.assert_allclose(schedule["losses"], schedule["expected_losses"], rtol=1e-5)
    assert schedule["train_function_reused"]
    if run["backend"] == "torch":
        # Eager train step: it runs once per step and nothing is compiled.
        assert schedule["traces"] == schedule["steps"]
    else:
        # One trace for three scales; a batch of a new shape adds one.
        assert schedule["traces"] == 1
        assert schedule["traces_after_new_shape"] == 2


def test_require_tensorflow_names_module_and_backend(monkeypatch):
    require_tensorflow("he_keras.training")  # This process runs TensorFlow.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ImportError, match=r"he_keras\.training needs .*backend='jax'"):
        require_tensorflow("he_keras.training")


def test_margin_loss_with_a_scale_variable():
    head = HypersphereDense(3, s=15.0)
    loss = CosineMarginLoss(m=0.2, s=head.scale)
    head.scale.assign(30.0)
    assert loss.s == 30.0
    assert CosineMarginLoss.from_config(loss.get_config()).s == 30.0
    logits = np.array([[3.0, 1.0, 0.0]], "float32")
    expected = backend_checks.np_margin_ce(np.array([0]), logits, 30.0 * 0.2).mean()
    assert float(loss(np.array([0]), logits)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="scalar"):
        CosineMarginLoss(s=keras.Variable(np.ones(2, "float32")))
    with pytest.raises(ValueError, match="Received"):
        CosineMarginLoss(s=keras.Variable(0.0))
