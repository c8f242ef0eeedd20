"""FastAT's catastrophic-overfitting stop: a probe large enough for its
threshold, the same random start at every check, and real models that do
and do not lose their robustness between epochs."""

import types

import keras
import numpy as np
import pytest
from helpers import digits_arrays

from he_keras.data import load_dataset
from he_keras.defaults import CO_FALSE_ALARM, CO_MAX_DROP, overfitting_probe_size
from he_keras.models import build_model
from he_keras.training import CALLBACKS, FRAMEWORKS, CatastrophicOverfittingStop

EPS = 0.2


def _train(framework, init_seed, **params):
    """A small CNN trained 3 epochs on digits (linear head)."""
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(init_seed)
    classifier = build_model("small_cnn", (8, 8, 1), 10, head="linear")
    trainer = FRAMEWORKS[framework](classifier, **params)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3))
    trainer.fit(x, y, batch_size=64, epochs=3, verbose=0)
    return classifier


@pytest.fixture(scope="module")
def weights():
    """Weights of one architecture: PGD-AT with two seeds, and standard training.

    Measured (2 AMD EPYC cores): clean test accuracy 0.90 / 0.92 / 0.95, PGD-5
    accuracy of the check on its 346 probe images 0.53 / 0.55 / 0.07: the
    standard model has the clean accuracy of the robust ones and none of
    their robustness, the signature of catastrophic overfitting.
    """
    pgd = dict(eps=EPS, step_size=EPS / 2, steps=2)
    return {
        "robust": _train("pgdat", 0, seed=0, **pgd).get_weights(),
        "robust_seed1": _train("pgdat", 1, seed=1, **pgd).get_weights(),
        "standard": _train("standard", 0).get_weights(),
    }


class _SwapWeights(keras.callbacks.Callback):
    """Ends epoch k with `sequence[k]` (the last entry for later epochs) in the classifier."""

    def __init__(self, sequence):
        super().__init__()
        self.sequence = sequence

    def on_epoch_end(self, epoch, logs=None):
        self.model.classifier.set_weights(self.sequence[min(epoch, len(self.sequence) - 1)])


def _fit_with_check(sequence, epochs):
    """Trains on 64 images; after every epoch the classifier gets the next weights of
    `sequence`, then the apps' `--callbacks=fastat_early_stop` check runs."""
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(0)
    trainer = FRAMEWORKS["standard"](build_model("small_cnn", (8, 8, 1), 10, head="linear"))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    config = types.SimpleNamespace(eps=EPS, batch_size=64, seed=0)
    stop = CALLBACKS["fastat_early_stop"](config, trainer, load_dataset("digits"))
    history = trainer.fit(
        x[:64], y[:64], batch_size=64, epochs=epochs, verbose=0,
        callbacks=[_SwapWeights(sequence), stop],
    )
    return trainer, stop, history


def test_probe_size_follows_the_hoeffding_bound():
    assert overfitting_probe_size(0.2, 1e-3) == 346
    assert overfitting_probe_size() == overfitting_probe_size(CO_MAX_DROP, CO_FALSE_ALARM) == 346
    assert overfitting_probe_size(0.1, 1e-3) == 1382
    assert overfitting_probe_size(1.0, 0.5) == 2
    # Smaller drops and rarer false alarms need more images.
    drops = [overfitting_probe_size(t, 1e-3) for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)]
    assert drops == sorted(drops, reverse=True) and len(set(drops)) == len(drops)
    alphas = [overfitting_probe_size(0.2, a) for a in (1e-6, 1e-4, 1e-3, 1e-2, 0.1)]
    assert alphas == sorted(alphas, reverse=True) and len(set(alphas)) == len(alphas)
    for n, t, alpha in ((346, 0.2, 1e-3), (1382, 0.1, 1e-3), (150, 0.2, 0.05)):
        assert np.exp(-n * t**2 / 2) <= alpha < np.exp(-(n - 1) * t**2 / 2)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="max_drop"):
            overfitting_probe_size(bad, 1e-3)
    for bad in (0.0, 1.0, -1e-3, 2.0, float("nan")):
        with pytest.raises(ValueError, match="false_alarm"):
            overfitting_probe_size(0.2, bad)


def test_simulated_false_alarms_stay_below_the_stated_rate_and_the_old_batch_does_not():
    # No true drop: every image survives the attack with the same chance p
    # in both epochs, independently (the outcomes change as much as they
    # can without a drop). The check fires when the accuracy falls by more
    # than 0.2.
    rng = np.random.default_rng(0)
    trials = 20000

    def alarm_rate(n, p_before, p_after):
        before = rng.binomial(n, p_before, trials) / n
        after = rng.binomial(n, p_after, trials) / n
        return float(np.mean(before - after > CO_MAX_DROP))

    n = overfitting_probe_size(CO_MAX_DROP, CO_FALSE_ALARM)
    for p in (0.3, 0.5, 0.7):
        assert alarm_rate(n, p, p) <= CO_FALSE_ALARM, p
    # One training batch of 64 images (the old probe): about 1 % false alarms at p = 0.5.
    assert alarm_rate(64, 0.5, 0.5) > 5 * CO_FALSE_ALARM
    # A real collapse (0.5 -> 0.2) is still caught at the derived size.
    assert alarm_rate(n, 0.5, 0.2) > 0.99


def test_too_small_a_probe_and_bad_arguments_are_refused():
    x, y, _, _ = digits_arrays()
    with pytest.raises(ValueError, match="at least 346 probe images.*Received: 64 images"):
        CatastrophicOverfittingStop(x[:64], y[:64], eps=EPS)
    with pytest.raises(ValueError, match="at least 1382 probe images.*Received: 400 images"):
        CatastrophicOverfittingStop(x[:400], y[:400], eps=EPS, max_drop=0.1)
    # A coarser check needs fewer images.
    assert len(CatastrophicOverfittingStop(x[:150], y[:150], eps=EPS, false_alarm=0.05).x) == 150
    with pytest.raises(ValueError, match="false_alarm=1.5"):
        CatastrophicOverfittingStop(x[:400], y[:400], eps=EPS, false_alarm=1.5)
    with pytest.raises(ValueError, match="batch_size=0"):
        CatastrophicOverfittingStop(x[:400], y[:400], eps=EPS, batch_size=0)


def test_every_check_attacks_from_the_same_random_start(weights):
    x, y, _, _ = digits_arrays()
    model = build_model("small_cnn", (8, 8, 1), 10, head="linear")
    model.set_weights(weights["robust"])
    n = overfitting_probe_size()
    stop = CatastrophicOverfittingStop(x[:n], y[:n], eps=EPS, batch_size=100, seed=0)
    stop.set_model(model)
    for epoch in range(4):
        stop.on_epoch_end(epoch, {})
    # Bit-identical: the same computation from the same start on one machine.
    assert len(set(stop.accuracies)) == 1 and stop.stopped_epoch is None
    # The start matters here: fresh random starts give different accuracies.
    fresh = [
        float(np.mean(np.argmax(model(stop.attack(model, x[:n], y[:n]), training=False), 1) == y[:n]))
        for _ in range(5)
    ]
    assert len(set(fresh)) > 1, fresh
    # Also without a seed: the start is drawn once and reused.
    unseeded = CatastrophicOverfittingStop(x[:n], y[:n], eps=EPS, seed=None)
    unseeded.set_model(model)
    assert unseeded.robust_accuracy() == unseeded.robust_accuracy()


def test_catastrophic_overfitting_stops_training_and_restores_the_robust_weights(weights):
    # Epoch 0 ends robust, epoch 1 with the standard model's weights (same
    # clean accuracy, no robustness): the check must fire after epoch 1.
    trainer, stop, history = _fit_with_check([weights["robust"], weights["standard"]], epochs=5)
    assert len(stop.x) == overfitting_probe_size(CO_MAX_DROP, CO_FALSE_ALARM) == 346
    assert stop.batch_size == 64 and stop.max_drop == CO_MAX_DROP
    assert stop.stopped_epoch == 1 and trainer.stop_training
    assert len(history.history["loss"]) == 2
    first, second = history.history["check_pgd_accuracy"]
    assert first > 0.35 and second < 0.2 and first - second > CO_MAX_DROP + 0.1
    for want, got in zip(weights["robust"], trainer.classifier.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_noise_between_equally_robust_models_does_not_stop_training(weights):
    # Every epoch ends with a robust model, alternately of two training seeds:
    # the robust accuracy changes only by the models' noise.
    sequence = [weights["robust"], weights["robust_seed1"]] * 2
    trainer, stop, history = _fit_with_check(sequence, epochs=4)
    assert len(stop.x) == 346
    assert stop.stopped_epoch is None and len(history.history["loss"]) == 4
    accuracies = history.history["check_pgd_accuracy"]
    assert min(accuracies) > 0.35 and max(accuracies) - min(accuracies) < CO_MAX_DROP / 2
    # The same model gives the same accuracy at its two checks.
    assert accuracies[0] == accuracies[2] and accuracies[1] == accuracies[3]
    for want, got in zip(weights["robust_seed1"], trainer.classifier.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_config_round_trips_with_the_new_arguments():
    x, y, _, _ = digits_arrays()
    stop = CatastrophicOverfittingStop(
        x[:200], y[:200], eps=EPS, steps=3, max_drop=0.3, false_alarm=1e-2, batch_size=50, seed=4
    )
    config = stop.get_config()
    assert (config["max_drop"], config["false_alarm"], config["batch_size"], config["seed"]) == (
        0.3, 1e-2, 50, 4)
    clone = CatastrophicOverfittingStop.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(stop))
    assert restored.get_config() == config
