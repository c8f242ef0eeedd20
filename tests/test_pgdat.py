"""PGD-AT trainer: metrics, variants, saving, and the quickstart result."""

import os

import keras
import numpy as np
import pytest

from he_keras.attacks import ProjectedGradientAttack
from he_keras.models import build_model
from he_keras.training import PGDAT
from he_keras.runs import TrainConfig, run
from helpers import accuracy, digits_arrays, undefended_digits_model


def _trainer(head, **kwargs):
    keras.utils.set_random_seed(0)
    clf = build_model("small_cnn", (8, 8, 1), 10, head=head, s=15.0)
    trainer = PGDAT(clf, eps=0.3, step_size=0.075, steps=3, seed=0, **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3))
    return trainer


@pytest.mark.parametrize("head", ["linear", "he", "mhe"])
def test_fit_logs_metrics_and_learns(head):
    x, y, xt, yt = digits_arrays()
    trainer = _trainer(head)
    hist = trainer.fit(x[:512], y[:512], batch_size=64, epochs=3, verbose=0, validation_data=(xt[:64], yt[:64]))
    keys = set(hist.history)
    assert {"loss", "clean_accuracy", "adv_accuracy", "val_adv_accuracy", "val_clean_accuracy"} <= keys
    assert all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][0] > 0.1  # the loss tracker is really updated
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["clean_accuracy"][-1] > 0.3


def test_margin_defaults_and_validation():
    assert _trainer("he").margin == 0.2
    assert _trainer("mhe").margin == 0.1
    assert _trainer("linear").margin == 0.0
    with pytest.raises(ValueError, match="margin"):
        _trainer("linear", margin=0.2)
    with pytest.raises(ValueError, match="eps"):
        PGDAT(build_model("small_cnn", (8, 8, 1), 10), eps=2.0)
    with pytest.raises(ValueError, match="loss"):
        _trainer("he").compile(optimizer="sgd", loss="mse")


def test_he_loss_uses_margin():
    trainer = _trainer("he")
    logits = np.array([[15.0, 0.0, 0.0]], "float32")
    y = np.array([0])
    with_margin = float(trainer.classification_loss(y, logits)[0])
    trainer.margin = 0.0
    assert with_margin > float(trainer.classification_loss(y, logits)[0])


def test_trainer_keras_round_trip(tmp_path):
    x, y, _, _ = digits_arrays()
    trainer = _trainer("he")
    trainer.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "trainer.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PGDAT)
    assert loaded.get_config()["eps"] == 0.3
    np.testing.assert_array_equal(trainer.predict(x[:8], verbose=0), loaded.predict(x[:8], verbose=0))


def test_quickstart_config_is_robust(tmp_path):
    """The quickstart flagfile's settings: PGD-AT+HE on digits for 30 epochs."""
    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=30, verbose=0)
    metrics = run(config)
    test = metrics["test"]
    _, _, xt, yt = digits_arrays()
    undefended = undefended_digits_model()
    x_adv = ProjectedGradientAttack(0.3, test["attack"]["step_size"], 20, seed=0, keep_best=True)(undefended, xt, yt)
    undefended_robust = accuracy(undefended, x_adv, yt)
    print("quickstart", test, "undefended PGD-20", undefended_robust)
    assert test["clean_accuracy"] >= 0.85
    assert test["robust_accuracy"] >= undefended_robust + 0.3
    assert os.path.exists(metrics["model_path"])


def test_validation_attack_restarts_from_the_same_seed_every_evaluation():
    # fit validates through evaluate() after every epoch; with a seed the
    # attack's random start is the same each time, so an unchanged model
    # scores the same and the plateau of val_adv_accuracy measures the model.
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (8, 8, 1), 10)
    trainer = PGDAT(model, eps=0.3, steps=1, eval_steps=1, eval_step_size=1e-3, seed=3)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    _, _, x, y = digits_arrays()
    first = trainer.evaluate(x[:64], y[:64], batch_size=64, verbose=0, return_dict=True)
    second = trainer.evaluate(x[:64], y[:64], batch_size=64, verbose=0, return_dict=True)
    assert first["loss"] == second["loss"]
    unseeded = PGDAT(model, eps=0.3, steps=1, eval_steps=1, eval_step_size=1e-3, seed=None)
    unseeded.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = {unseeded.evaluate(x[:64], y[:64], batch_size=64, verbose=0, return_dict=True)["loss"]
              for _ in range(2)}
    assert len(losses) == 2  # without a seed the start is drawn anew
