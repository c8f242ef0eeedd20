"""Checks of the HE head and its losses on the Keras backend this runs under.

`tests/test_backends.py` runs `run_checks` in its own (TensorFlow) process
and this file as a script under `KERAS_BACKEND=jax` / `torch`, one process per
backend, since each backend import costs seconds:

    KERAS_BACKEND=jax python tests/backend_checks.py WORKDIR

Each run saves its models to `WORKDIR/<backend>_<head>.keras` (with their
predictions on `WORKDIR/inputs.npy`), loads the `.keras` files the
TensorFlow run saved there, and writes its measurements to
`WORKDIR/<backend>.json`; the test asserts on them.
"""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np

HEADS = ("he", "mhe")
SCALES = (5.0, 20.0, 40.0)  # The head's scale in epochs 0, 1, 2 of the schedule.
MARGIN = 0.2


# === NumPy references ===


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_cosine(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return z @ (w / np.linalg.norm(w, axis=0, keepdims=True))


def np_margin_ce(y: np.ndarray, logits: np.ndarray, offset: float) -> np.ndarray:
    rows = np.arange(len(y))
    shifted = logits.astype(np.float64).copy()
    shifted[rows, y] -= offset
    return -np_log_softmax(shifted)[rows, y]


def np_per_example_losses(y, t, z, ref) -> dict:
    """NumPy versions of the `he_keras.losses` functions."""
    rows = np.arange(len(y))
    true = z[rows, y]
    masked = z.copy()
    masked[rows, y] = -np.inf
    other = masked.max(axis=1)
    top = -np.sort(-z, axis=1)
    log_p, log_q = np_log_softmax(ref), np_log_softmax(z)
    return {
        "cross_entropy": np_margin_ce(y, z, 0.0),
        "margin_cross_entropy": np_margin_ce(y, z, 3.0),
        "kl_divergence": (np.exp(log_p) * (log_p - log_q)).sum(axis=1),
        "cw_margin": np.minimum(other - true, 1.5),
        "dlr": -(true - other) / (top[:, 0] - top[:, 2] + 1e-12),
        "targeted_dlr": -(true - z[rows, t])
        / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12),
    }


# === Checks ===


def head_and_loss_errors() -> dict:
    """Max abs errors of the layers and losses against NumPy."""
    import keras

    from he_keras import ArcCosLogits, CosineMarginLoss, HypersphereDense, losses

    rng = np.random.default_rng(0)
    features = rng.normal(size=(16, 12)).astype("float32")
    y = rng.integers(0, 5, size=16)
    s = 15.0
    he = HypersphereDense(5, s=s)
    mhe = ArcCosLogits(5, s=s)
    errors = {}
    for name, layer in (("he", he), ("mhe", mhe)):
        out = keras.ops.convert_to_numpy(layer(features))
        cos = np_cosine(features, keras.ops.convert_to_numpy(layer.kernel))
        expected = s * cos if name == "he" else -s * np.arccos(np.clip(cos, -1, 1))
        errors[f"{name}_logits"] = float(np.abs(out - expected).max())
    logits = keras.ops.convert_to_numpy(he(features))
    loss = CosineMarginLoss(m=MARGIN, s=s)(y, logits)
    expected_loss = np_margin_ce(y, logits, s * MARGIN).mean()
    errors["cosine_margin_loss"] = abs(float(keras.ops.convert_to_numpy(loss)) - expected_loss)

    z = rng.normal(size=(16, 6)).astype("float32") * 4
    ref = rng.normal(size=(16, 6)).astype("float32") * 4
    t = (y + 1) % 6
    got = {
        "cross_entropy": losses.cross_entropy(y, z),
        "margin_cross_entropy": losses.margin_cross_entropy(y, z, 3.0),
        "kl_divergence": losses.kl_divergence(ref, z),
        "cw_margin": losses.cw_margin(y, z, 1.5),
        "dlr": losses.dlr(y, z),
        "targeted_dlr": losses.targeted_dlr(y, z, t),
    }
    for name, expected in np_per_example_losses(y, t, z, ref).items():
        value = keras.ops.convert_to_numpy(got[name])
        errors[name] = float(np.abs(value - expected).max())
    return errors


def set_seed(seed: int) -> None:
    """Seeds initializers and `fit`'s shuffling.

    Keras draws the seeds of unseeded initializers from Python's `random`;
    `keras.utils.set_random_seed` would also import TensorFlow.
    """
    random.seed(seed)
    np.random.seed(seed)


def classifier(head: str, features: int = 16, classes: int = 4):
    """A tiny MLP with an HE (`"he"`) or m-HE (`"mhe"`) head of scale 15."""
    import keras

    from he_keras import ArcCosLogits, HypersphereDense

    layer = HypersphereDense if head == "he" else ArcCosLogits
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(16, activation="relu"),
            layer(classes, s=15.0, name="head"),
        ]
    )


def save_and_load(workdir: str, backend: str) -> dict:
    """Saves this backend's models; max abs prediction errors of TF's files."""
    import keras

    from he_keras import CosineMarginLoss

    inputs = np.load(os.path.join(workdir, "inputs.npy"))
    for head in HEADS:
        set_seed(1)
        model = classifier(head)
        model.compile(optimizer="sgd", loss=CosineMarginLoss(m=MARGIN, s=15.0))
        model.save(os.path.join(workdir, f"{backend}_{head}.keras"))
        np.save(os.path.join(workdir, f"{backend}_{head}.npy"), model.predict(inputs, verbose=0))
    errors = {}
    if backend != "tensorflow":
        for head in HEADS:
            path = os.path.join(workdir, f"tensorflow_{head}.keras")
            loaded = keras.saving.load_model(path)
            expected = np.load(os.path.join(workdir, f"tensorflow_{head}.npy"))
            errors[head] = float(np.abs(loaded.predict(inputs, verbose=0) - expected).max())
            errors[f"{head}_loss"] = loaded.loss.get_config()
    return errors


def blobs(n: int, seed: int = 0) -> tuple:
    """`n` points of 4 Gaussian classes in 16 dimensions."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(4, 16)) * 1.5
    y = np.arange(n) % 4
    x = means[y] + rng.normal(size=(n, 16))
    return x.astype("float32"), y.astype("int32")


def first_and_last(history) -> list:
    """The mean training loss of the first and of the last epoch."""
    return [float(history.history["loss"][0]), float(history.history["loss"][-1])]


def fit_lowers_loss() -> dict:
    """CosineMarginLoss in the first and last epoch of `model.fit` (HE, m-HE)."""
    import keras

    from he_keras import CosineMarginLoss

    x, y = blobs(256)
    result = {}
    for head in HEADS:
        set_seed(2)
        model = classifier(head)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CosineMarginLoss(m=MARGIN, s=15.0))
        history = model.fit(x, y, batch_size=32, epochs=5, verbose=0)
        result[head] = first_and_last(history)
    return result


def backbone_fits() -> list:
    """Loss of `he_keras.models`' small CNN (m-HE head) in `fit`'s first and last epoch."""
    import keras

    from he_keras import CosineMarginLoss
    from he_keras.models import build_model

    x, y = blobs(64, seed=4)
    images = (x.reshape(64, 4, 4, 1).repeat(2, 1).repeat(2, 2) + 3.0) / 6.0  # 8x8x1
    set_seed(4)
    model = build_model("small_cnn", (8, 8, 1), 4, head="mhe", s=15.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CosineMarginLoss(m=0.1, s=15.0))
    return first_and_last(model.fit(images, y, batch_size=64, epochs=10, verbose=0))


def scale_by_epoch(head):
    """A callback that sets `head.scale` to `SCALES[epoch]` as epochs begin."""
    import keras

    class ScaleByEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            head.scale.assign(SCALES[epoch])

    return ScaleByEpoch()


def scale_schedule_without_retrace() -> dict:
    """Changes the head's scale between epochs of one `fit`; counts traces.

    The model is compiled with `CosineMarginLoss(s=head.scale)` and a zero
    learning rate, so the weights stay put and each epoch's loss must equal
    the NumPy margin loss at that epoch's scale. `train_step` is wrapped by a
    counter: under a compiled train function (TensorFlow, JAX) the Python
    body runs once per trace, in eager mode (PyTorch) once per step. A later
    `fit` on 48 points (a 16-point batch, a new shape) must add one trace,
    which shows the counter sees retraces.
    """
    import keras

    from he_keras import CosineMarginLoss

    x, y = blobs(64, seed=1)
    set_seed(3)
    model = classifier("he")
    head = model.get_layer("head")
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=CosineMarginLoss(m=MARGIN, s=head.scale),
    )
    calls = [0]
    train_step = model.train_step

    def counting_train_step(*args):
        calls[0] += 1
        return train_step(*args)

    model.train_step = counting_train_step
    history = model.fit(
        x, y, batch_size=32, epochs=len(SCALES), shuffle=False, verbose=0,
        callbacks=[scale_by_epoch(head)],
    )
    traces = calls[0]
    train_function = model.train_function
    model.fit(x[:48], y[:48], batch_size=32, epochs=1, shuffle=False, verbose=0)
    head.scale.assign(1.0)
    cosine = model.predict(x, verbose=0)
    expected = [float(np_margin_ce(y, s * cosine, s * MARGIN).mean()) for s in SCALES]
    return {
        "losses": [float(v) for v in history.history["loss"]],
        "expected_losses": expected,
        "traces": traces,
        "steps": len(SCALES) * 2,
        "traces_after_new_shape": calls[0],
        "train_function_reused": model.train_function is train_function,
    }


def run_checks(workdir: str) -> dict:
    """Runs every check under the current backend."""
    import keras

    backend = keras.backend.backend()
    return {
        "backend": backend,
        "errors": head_and_loss_errors(),
        "loaded": save_and_load(workdir, backend),
        "fit": fit_lowers_loss(),
        "backbone_fit": backbone_fits(),
        "schedule": scale_schedule_without_retrace(),
    }


def tensorflow_only_import_errors() -> dict:
    """The error of importing each TensorFlow-only module (None: imported)."""
    import importlib

    from he_keras.backends import TENSORFLOW_ONLY

    errors = {}
    for name in TENSORFLOW_ONLY:
        try:
            importlib.import_module(name)
            errors[name] = None
        except ImportError as err:
            errors[name] = str(err)
    return errors


def train_app(workdir: str) -> dict:
    """`apps/train.py --flagfile=configs/quickstart.cfg`, run as `__main__` in this process.

    Returns:
        `{"exit": status, "stderr": its text, "wrote": whether the output
        directory exists afterwards}`.
    """
    import contextlib
    import io
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output_dir = os.path.join(workdir, "train_app")
    argv = sys.argv
    sys.argv = ["train.py", f"--flagfile={os.path.join(root, 'configs', 'quickstart.cfg')}",
                f"--output_dir={output_dir}"]
    stderr = io.StringIO()
    status = 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(os.path.join(root, "apps", "train.py"), run_name="__main__")
        except SystemExit as exit_:
            status = exit_.code
        finally:
            sys.argv = argv
    return {"exit": status, "stderr": stderr.getvalue(), "wrote": os.path.exists(output_dir)}


if __name__ == "__main__":
    import he_keras  # noqa: F401  (first, so the check below sees its imports)

    tensorflow_after_import = "tensorflow" in sys.modules
    out = run_checks(sys.argv[1])
    out["tensorflow_imported_by_he_keras"] = tensorflow_after_import
    out["tensorflow_only_import_errors"] = tensorflow_only_import_errors()
    out["train_app"] = train_app(sys.argv[1])
    with open(os.path.join(sys.argv[1], f"{out['backend']}.json"), "w") as f:
        json.dump(out, f, indent=1)
