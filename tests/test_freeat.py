"""FreeAT: the paper's epoch budget (runner and configs), a finite buffer under mixed precision, the
buffer in the checkpoint."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from he_keras.models import build_model
from he_keras.training import FreeAT
from he_keras.runs import TrainConfig, run
from he_keras.runs.build import training_passes
from he_keras.training.checkpointing import training_checkpoint
from helpers import digits_arrays


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_non_finite_input_gradient_leaves_the_buffer_finite(mixed_float16):
    """A loss scale of 2^40 overflows float16 gradients: the optimizer skips
    that update, and the buffer must skip its step too instead of turning
    into NaN (sign(NaN) survives the eps clip) for every later batch."""
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(0)
    classifier = build_model("small_cnn", (8, 8, 1), 10, head="he", s=15.0)
    trainer = FreeAT(classifier, replays=2, eps=0.3, seed=0)
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(1e-3), initial_scale=2.0**40
    )
    trainer.compile(optimizer=optimizer)
    before = [w.copy() for w in classifier.get_weights()]
    trainer.fit(x[:32], y[:32], batch_size=32, epochs=1, shuffle=False, verbose=0)
    # Both replays overflowed: no weight update, scale halved twice.
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**38
    for a, b in zip(before, classifier.get_weights()):
        np.testing.assert_array_equal(a, b)
    delta = trainer.perturbation.numpy()
    assert delta.shape == (32, 8, 8, 1) and np.all(np.isfinite(delta))
    np.testing.assert_array_equal(delta, 0.0)  # skipped steps, as the optimizer
    # Once the scale has come down, the buffer moves again.
    optimizer.dynamic_scale.assign(2.0**8)
    trainer.fit(x[:32], y[:32], batch_size=32, epochs=1, shuffle=False, verbose=0)
    delta = trainer.perturbation.numpy()
    assert np.all(np.isfinite(delta)) and np.abs(delta).max() == pytest.approx(0.3)


def test_checkpoint_holds_the_buffer(tmp_path):
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(0)
    trainer = FreeAT(build_model("small_cnn", (8, 8, 1), 10, head="he"), replays=2, eps=0.3)
    trainer.compile(optimizer="adam")
    trainer.fit(x[:64], y[:64], batch_size=64, epochs=1, shuffle=False, verbose=0)
    saved = trainer.perturbation.numpy()
    assert np.abs(saved).max() > 0
    checkpoint = training_checkpoint(trainer, tf.Variable(1, dtype=tf.int64))
    path = checkpoint.write(str(tmp_path / "ckpt"))
    trainer.fit(x[64:160], y[64:160], batch_size=96, epochs=1, shuffle=False, verbose=0)
    assert trainer.perturbation.numpy().shape[0] == 96
    checkpoint.read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(trainer.perturbation.numpy(), saved)


def test_epochs_are_the_papers_budget_divided_by_the_replays(tmp_path):
    """`epochs=5, replays=2`: ceil(5 / 2) = 3 passes of 2 replays per batch."""
    metrics = run(TrainConfig(
        framework="freeat", framework_params={"replays": 2}, head="linear",
        n_train=128, epochs=5, batch_size=64, steps=1, step_size=0.3,
        lr_schedule="cosine", validation_split=0.0, n_eval=16, eval_steps=1,
        output_dir=str(tmp_path), verbose=0, tensorboard=False,
    ))
    assert len(metrics["history"]["loss"]) == 3
    # 3 passes x 2 batches x 2 replays optimizer updates, the cosine schedule
    # spanning exactly them (its learning rate reaches 0 at the last update).
    assert metrics["optimizer_updates"] == 12
    assert metrics["history"]["learning_rate"][-1] == pytest.approx(0.0, abs=1e-9)


# Passes over the data of the paper budgets: CIFAR-10 80 epochs / 8 replays,
# ImageNet 90 / 4 (LR decays after 8 and 16 passes), digits 30 / 4.
CONFIG_PASSES = {
    "freeat.cfg": 10, "freeat_he.cfg": 10, "freeat_mhe.cfg": 10, "imagenet_freeat_he.cfg": 23,
    "digits_freeat.cfg": 8, "digits_freeat_he.cfg": 8, "digits_freeat_mhe.cfg": 8,
}


@pytest.mark.parametrize("name", sorted(CONFIG_PASSES))
def test_freeat_configs_train_the_papers_budget(name):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", name)
    with open(path) as f:
        values = dict(line.strip()[2:].split("=", 1) for line in f if line.startswith("--"))
    replays = int(values["replays"])
    assert training_passes(int(values["epochs"]), replays) == CONFIG_PASSES[name]
    if "lr_decay_epochs" in values:
        decays = [float(e) / replays for e in values["lr_decay_epochs"].split(",")]
        assert decays == [8, 16]
