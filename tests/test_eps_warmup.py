"""Eps warm-up: the compiled training attack uses the scheduled radius.

A probe records, inside the compiled `train_step`, the largest perturbation
of each batch's adversarial examples; with `EpsilonWarmup` it must follow
`warmup_fraction * eps` batch by batch (a radius baked in at trace time would
give one value throughout), reach the full eps after the warm-up, and leave
the validation attack at the full eps.
"""

import dataclasses
import functools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from he_keras.models import build_model
from he_keras.training import PGDAT, EpsilonWarmup, FreeAT
from he_keras.training.eps_warmup import warmup_fraction
from he_keras.runs import TrainConfig, run
from helpers import digits_arrays

EPS = 0.3


def test_warmup_fraction():
    assert warmup_fraction(0, 0, 10, 2.0) == 0.0
    assert warmup_fraction(1, 5, 10, 2.0) == 0.75
    assert warmup_fraction(2, 0, 10, 2.0) == 1.0
    assert warmup_fraction(7, 3, 10, 2.0) == 1.0
    assert warmup_fraction(1, 5, None, 2.0) == 0.5  # unknown steps: per epoch
    assert warmup_fraction(0, 0, 10, 0.0) == 1.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), True])
def test_warmup_epochs_must_be_a_non_negative_number(bad):
    with pytest.raises(ValueError, match="warmup_epochs"):
        EpsilonWarmup(bad)


class ProbedPGDAT(PGDAT):
    """PGD-AT that stores max |x* - x| of each training batch in a variable."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe = keras.Variable(0.0, trainable=False, name="probe")

    def craft(self, x, y):
        x_adv = super().craft(x, y)
        self.probe.assign(tf.reduce_max(tf.abs(x_adv - tf.cast(x, tf.float32))))
        return x_adv


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.radii, self.epoch = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.radii.append((self.epoch, batch, float(self.model.probe.numpy())))


def _trainer(cls=ProbedPGDAT, steps=3, **kwargs):
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (8, 8, 1), 10, head="linear")
    trainer = cls(model, eps=EPS, steps=steps, seed=0, **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    return trainer


def test_compiled_train_step_attacks_with_the_warmup_radius():
    x, y, _, _ = digits_arrays()
    x, y = x[:256], y[:256]  # 4 batches of 64 per epoch
    trainer = _trainer()
    record = Record()
    history = trainer.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0,
                          validation_data=(x[:64], y[:64]),
                          callbacks=[EpsilonWarmup(2), record])
    assert len(record.radii) == 12
    for epoch, batch, radius in record.radii:
        want = EPS * warmup_fraction(epoch, batch, 4, 2.0)
        # Sign steps from a uniform start reach the boundary of the ball.
        assert radius == pytest.approx(want, abs=1e-6), (epoch, batch)
    assert history.history["attack_eps_fraction"] == pytest.approx([0.375, 0.875, 1.0])
    # After training the trainer's attack is back at its configured eps.
    assert trainer.attack_budget == 1.0


class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("loop", ["fit", "distributed_loop"])
def test_an_interrupted_fit_leaves_the_attack_at_the_budget_it_found(loop):
    from he_keras.training import DistributedTrainLoop
    from he_keras.runs.build import make_strategy

    x, y, _, _ = digits_arrays()
    data = tf.data.Dataset.from_tensor_slices((x[:256], y[:256])).batch(64, drop_remainder=True)
    strategy = make_strategy("mirrored")
    with strategy.scope():
        trainer = _trainer()
        trainer.optimizer.build(trainer.trainable_variables)  # slots outside the step
    fit = (functools.partial(trainer.fit, shuffle=False) if loop == "fit"
           else DistributedTrainLoop(trainer, strategy).fit)
    with pytest.raises(KeyboardInterrupt):
        fit(data, epochs=2, verbose=0, callbacks=[EpsilonWarmup(2), Interrupt()])
    assert trainer.attack_budget == 1.0
    # A budget set by hand survives a warm-up-free fit.
    trainer.set_attack_budget(0.5)
    fit(data.take(1), epochs=1, verbose=0)
    assert trainer.attack_budget == 0.5


def test_mirrored_replicas_attack_with_the_warmup_radius():
    from he_keras.runs.build import make_strategy

    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2, "conftest.py splits the CPU in two"
    x, y, _, _ = digits_arrays()
    with strategy.scope():
        trainer = _trainer(MirroredProbe)
    record = Record()
    trainer.fit(x[:256], y[:256], batch_size=64, epochs=2, shuffle=False, verbose=0,
                callbacks=[EpsilonWarmup(2), record])
    for epoch, batch, radius in record.radii:
        assert radius == pytest.approx(EPS * warmup_fraction(epoch, batch, 4, 2.0), abs=1e-6)


class MirroredProbe(ProbedPGDAT):
    """The probe as the first replica's value (a replica may not assign a shared variable)."""

    def __init__(self, *args, **kwargs):
        PGDAT.__init__(self, *args, **kwargs)
        self.probe = keras.Variable(0.0, trainable=False, name="probe",
                                    aggregation="only_first_replica")


def test_validation_attack_keeps_the_full_radius():
    x, y, _, _ = digits_arrays()
    trainer = _trainer()
    trainer.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
    trainer.set_attack_budget(0.0)
    x_adv = trainer.eval_attack(trainer.classifier, x[:64], y[:64])
    assert float(tf.reduce_max(tf.abs(x_adv - x[:64]))) == pytest.approx(EPS, abs=1e-6)
    # The training attack, at budget 0, returns the clean images.
    assert float(tf.reduce_max(tf.abs(trainer.attack(trainer.classifier, x[:64], y[:64]) - x[:64]))) == 0.0


def test_freeat_perturbation_stays_in_the_warmup_ball():
    x, y, _, _ = digits_arrays()
    trainer = _trainer(FreeAT, steps=1, replays=2)
    trainer.fit(x[:128], y[:128], batch_size=64, epochs=1, shuffle=False, verbose=0)
    assert float(tf.reduce_max(tf.abs(trainer.perturbation))) == pytest.approx(EPS, abs=1e-6)
    trainer.set_attack_budget(0.25)
    trainer.fit(x[:128], y[:128], batch_size=64, epochs=1, shuffle=False, verbose=0)
    # The stored full-eps buffer was re-projected onto the smaller ball.
    assert float(tf.reduce_max(tf.abs(trainer.perturbation))) == pytest.approx(0.25 * EPS, abs=1e-6)


@pytest.mark.parametrize("bad", [-0.5, 3.0, 4.0])
def test_train_config_refuses_a_warmup_that_never_reaches_the_full_eps(bad):
    with pytest.raises(ValueError, match=r"`eps_warmup_epochs` must be in \[0, epochs\)"):
        TrainConfig(epochs=3, eps_warmup_epochs=bad).validate()


def test_a_run_saved_before_the_warmup_existed_refuses_to_resume_with_one(tmp_path):
    config = TrainConfig(dataset="digits", n_train=64, epochs=2, steps=1, head="linear", n_eval=16,
                         eval_steps=1, output_dir=str(tmp_path / "run"), tensorboard=False,
                         verbose=0, validation_split=0.0)

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    run(dataclasses.replace(config, epochs=2), [StopAfterFirstEpoch()])
    path = tmp_path / "run" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["config"]["eps_warmup_epochs"]  # as written before the setting existed
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"eps_warmup_epochs=0\.0 \(now 1\.0\)"):
        dataclasses.replace(config, eps_warmup_epochs=1.0).validate()
    dataclasses.replace(config, eps_warmup_epochs=0.0).validate()  # its default: resumes


def test_runner_warms_up_and_logs_the_fraction(tmp_path):
    metrics = run(TrainConfig(
        dataset="digits", n_train=192, epochs=3, steps=2, eps=EPS, eps_warmup_epochs=2,
        head="linear", n_eval=32, eval_steps=2, output_dir=str(tmp_path / "run"),
        tensorboard=False, verbose=0, validation_split=0.0))
    # 3 batches per epoch: the last batch of epoch 0 uses (0 + 2/3) / 2 of eps.
    assert metrics["history"]["attack_eps_fraction"] == pytest.approx([1 / 3, 5 / 6, 1.0])
    assert metrics["config"]["eps_warmup_epochs"] == 2
    assert np.isfinite(metrics["history"]["loss"]).all()
