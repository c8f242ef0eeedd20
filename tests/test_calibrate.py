"""The regime check of experiments/calibrate.py fires on each criterion."""

from experiments import calibrate, calibration_settings, validation_noise

FLAT = [0.10, 0.30, 0.400, 0.405, 0.400, 0.402, 0.404]


def test_plateau_span_and_change():
    got = calibrate.plateau([0.1, 0.5, 0.52, 0.49, 0.51, 0.50])
    assert abs(got["span"] - 0.03) < 1e-9
    assert abs(got["change"]) < 1e-9
    assert calibrate.plateau([0.1, 0.2])["span"] is None
    assert got["mean_change"] is None
    ten = [0.1] * 5 + [0.3] * 5
    assert abs(calibrate.plateau(ten)["mean_change"] - 0.2) < 1e-9


def test_regime_met():
    assert calibrate.regime(0.95, 0.40, FLAT)["met"]


def test_regime_fires_on_each_criterion():
    low_clean = calibrate.regime(0.89, 0.40, FLAT)
    assert not low_clean["met"] and not low_clean["clean_ge_90"]
    for aa in (0.24, 0.86):
        got = calibrate.regime(0.95, aa, FLAT)
        assert not got["met"] and not got["autoattack_in_25_85"]
    rising = calibrate.regime(0.95, 0.40, FLAT[:-1] + [0.42])
    assert not rising["met"] and not rising["val_converged"] and rising["val_trend"] > 1.0
    short = calibrate.regime(0.95, 0.40, FLAT[:3])
    assert not short["met"] and not short["val_converged"] and short["val_trend"] is None


def test_every_setting_is_plain_pgdat_in_the_issue_bounds():
    for name, setting in calibration_settings.SETTINGS.items():
        assert setting["framework"] == "pgdat", name
        minimum = 7 if setting["dataset"] == "digits" else 10
        assert setting["steps"] >= minimum, name
        assert setting["validation_split"] > 0, name


def test_validation_attack_is_the_trainers():
    from he_keras.defaults import pgd_step_size

    setting = calibration_settings.SETTINGS["mnist5k_e25_s10_ep15_step10-13"]
    pgd = validation_noise.validation_pgd(setting, seed=3)
    assert (pgd.eps, pgd.steps, pgd.step_size) == (0.25, 10, pgd_step_size(0.25, 10))
    assert pgd.random_start == "uniform" and pgd.seed == 3 and not pgd.keep_best


def test_train_only_record_has_curves_and_no_verdict():
    history = {"val_adv_accuracy": FLAT, "val_adv_fixed_accuracy": FLAT}
    metrics = {"config": {"dataset": "mnist5k"}, "history": history, "test": {"robust_accuracy": 0.5},
               "train_seconds": 10.0}
    record = calibrate.unevaluated("x", metrics)
    assert record["plateau"]["span"] == calibrate.plateau(FLAT)["span"]
    assert "regime" not in record and "not run" in record["status"]
