"""HE-LIS / HE-CMP scale schedules (seed 003, Appendix G)."""

import types

import keras
import numpy as np
import pytest

from he_keras.models import build_model, find_head
from he_keras.training import CALLBACKS, PGDAT, LinearScaleSchedule, MaxProbabilityScaleSchedule
from he_keras.training.schedules import mean_max_probability, solve_scale
from helpers import digits_arrays


def _trainer(head="he"):
    keras.utils.set_random_seed(0)
    clf = build_model("small_cnn", (8, 8, 1), 10, head=head, s=1.0)
    trainer = PGDAT(clf, eps=0.1, step_size=0.05, steps=1, margin=0.0, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    return trainer


def test_lis_follows_eq5_and_stays_at_the_final_scale():
    trainer = _trainer()
    lis = LinearScaleSchedule(interpolation_epochs=10, initial_scale=1.0, final_scale=75.0)
    lis.set_model(trainer)
    head = find_head(trainer.classifier)
    for epoch in range(13):
        lis.on_epoch_begin(epoch)
        expected = 1.0 + min(epoch, 10) / 10 * 74.0
        assert float(head.scale.numpy()) == pytest.approx(expected, rel=1e-6)
    assert [s for _, s in lis.trajectory][:3] == pytest.approx([1.0, 8.4, 15.8])


def test_lis_drives_the_scale_during_fit_and_logs_it():
    x, y, _, _ = digits_arrays()
    trainer = _trainer()
    lis = LinearScaleSchedule(interpolation_epochs=3)
    history = trainer.fit(x[:64], y[:64], batch_size=64, epochs=3, verbose=0, callbacks=[lis])
    assert lis.trajectory == [(0, 1.0), (1, pytest.approx(1 + 74 / 3)), (2, pytest.approx(1 + 148 / 3))]
    assert history.history["he_scale"] == pytest.approx([1.0, 1 + 74 / 3, 1 + 148 / 3])


def test_solve_scale_matches_the_closed_form():
    # Two classes, every example with the same gap d: P_max = sigmoid(s d).
    gap = 0.4
    logits = np.tile([[0.3, 0.3 - gap]], (5, 1))
    for target in (0.55, 0.8, 0.99):
        scale = solve_scale(logits, target, 1e-3, 1e3)
        assert scale == pytest.approx(np.log(target / (1 - target)) / gap, rel=1e-8)
    assert solve_scale(logits, 1.0, 1e-2, 100.0) == 100.0  # P = 1: capped
    assert solve_scale(logits, 0.5, 1e-2, 100.0) == 1e-2  # below reach: floor


def test_mean_max_probability_is_monotone_in_the_scale():
    rng = np.random.default_rng(0)
    cosines = rng.uniform(-1, 1, (50, 10))
    values = [mean_max_probability(cosines, s) for s in np.linspace(0, 60, 50)]
    assert values[0] == pytest.approx(0.1)
    assert np.all(np.diff(values) >= 0) and values[-1] > 0.9


def test_cmp_sets_the_scale_of_the_target_probability():
    x, _, _, _ = digits_arrays()
    trainer = _trainer("mhe")
    cmp = MaxProbabilityScaleSchedule(x[:200], interpolation_epochs=9)
    cmp.set_model(trainer)
    head = find_head(trainer.classifier)
    solved = 0
    for epoch in range(11):
        cmp.on_epoch_begin(epoch)
        target = 0.2 + min(epoch, 9) / 9 * 0.8
        scale = float(head.scale.numpy())
        assert cmp.trajectory[-1] == (epoch, pytest.approx(scale))
        reached = mean_max_probability(cmp.unscaled_logits(), scale)
        if scale < cmp.max_scale:
            assert reached == pytest.approx(target, abs=1e-6)
            solved += 1
        else:  # Unreachable below the cap (always for P = 1).
            assert reached <= target
    scales = [s for _, s in cmp.trajectory]
    assert solved >= 5 and scales[-1] == cmp.max_scale
    assert np.all(np.diff(scales) >= 0)


def test_schedules_need_an_he_head_and_valid_arguments():
    lis = LinearScaleSchedule(5)
    lis.set_model(_trainer("linear"))
    with pytest.raises(ValueError, match="linear head"):
        lis.on_epoch_begin(0)
    with pytest.raises(ValueError, match="interpolation_epochs=0"):
        LinearScaleSchedule(0)
    with pytest.raises(ValueError, match="final_scale=-1"):
        LinearScaleSchedule(5, final_scale=-1)
    with pytest.raises(ValueError, match="initial_probability=0"):
        MaxProbabilityScaleSchedule(np.zeros((2, 8, 8, 1)), 5, initial_probability=0)
    with pytest.raises(ValueError, match="min_scale=5"):
        MaxProbabilityScaleSchedule(np.zeros((2, 8, 8, 1)), 5, min_scale=5, max_scale=1)
    with pytest.raises(ValueError, match=r"shape=\(0,\)"):
        MaxProbabilityScaleSchedule(np.zeros((0,)), 5)


def test_schedule_configs_round_trip():
    x, _, _, _ = digits_arrays()
    for schedule in (LinearScaleSchedule(7, 2.0, 50.0), MaxProbabilityScaleSchedule(x[:3], 4)):
        name = keras.saving.get_registered_name(type(schedule))
        assert name == f"he_keras>{type(schedule).__name__}"
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
        assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()


def test_callback_factories_follow_the_paper_settings():
    from he_keras.data import load_dataset

    config = types.SimpleNamespace(epochs=100, batch_size=64, eps=0.3, seed=0)
    data = load_dataset("digits")
    trainer = _trainer()
    lis = CALLBACKS["he_lis"](config, trainer, data)
    assert (lis.interpolation_epochs, lis.initial_scale, lis.final_scale) == (100, 1.0, 75.0)
    cmp = CALLBACKS["he_cmp"](config, trainer, data)
    assert (cmp.interpolation_epochs, cmp.initial_probability, cmp.final_probability) == (90, 0.2, 1.0)
    assert len(cmp.x) == 1024
    stop = CALLBACKS["fastat_early_stop"](config, trainer, data)
    assert (len(stop.x), stop.eps, stop.steps, stop.step_size) == (346, 0.3, 5, 0.075)
    assert (stop.max_drop, stop.false_alarm, stop.batch_size) == (0.2, 1e-3, 64)
