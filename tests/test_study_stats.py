"""The reproduction study's statistics: paired two-way bootstrap, verdicts, record rules."""

import numpy as np
import pytest

from experiments import stats


def test_certain_effect_is_reproduced_and_its_mirror_contradicted():
    ones, zeros = np.ones((5, 100)), np.zeros((5, 100))
    up = stats.paired_effect(ones, zeros)
    assert up["effect"] == up["ci_low"] == up["ci_high"] == 100.0
    assert stats.verdict(up["ci_low"], up["ci_high"], 0.95, 0.5) == "reproduced"
    down = stats.paired_effect(zeros, ones)
    assert stats.verdict(down["ci_low"], down["ci_high"], 0.95, 0.5) == "contradicted"


def test_interval_counts_test_point_noise():
    # Identical seeds: a seeds-only bootstrap would give a zero-width interval.
    rng = np.random.default_rng(1)
    row_a = (rng.random(150) < 0.55).astype(float)
    row_b = (rng.random(150) < 0.50).astype(float)
    effect = stats.paired_effect(np.tile(row_a, (5, 1)), np.tile(row_b, (5, 1)))
    assert effect["width"] > 5.0  # ~±7 pts for 150 unpaired-ish points
    assert effect["ci_low"] < effect["effect"] < effect["ci_high"]


def test_interval_counts_seed_noise():
    # Every point moves together within a seed: points alone carry no noise.
    per_seed = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    a = np.tile(per_seed[:, None], (1, 200))
    effect = stats.paired_effect(a, np.zeros_like(a))
    assert effect["effect"] == pytest.approx(60.0)
    assert effect["ci_low"] < 60.0 < effect["ci_high"]
    assert effect["ci_low"] <= 20.0 and effect["ci_high"] >= 100.0 - 1e-9


def test_null_effect_is_inconclusive_and_pairing_matters():
    rng = np.random.default_rng(2)
    shared = (rng.random((5, 300)) < 0.5).astype(float)
    flips = rng.random((5, 300)) < 0.02
    a = np.where(flips, 1.0 - shared, shared)
    paired = stats.paired_effect(a, shared)
    assert stats.verdict(paired["ci_low"], paired["ci_high"], 0.95, 0.5) == "inconclusive"
    # Shuffling the points of one arm breaks the pairing and widens the interval.
    unpaired = stats.paired_effect(a, shared[:, rng.permutation(300)])
    assert unpaired["width"] > 3 * paired["width"]


def test_bootstrap_of_the_mean_difference_is_paired_effect():
    rng = np.random.default_rng(8)
    a = (rng.random((4, 250)) < 0.6).astype(float)
    b = (rng.random((4, 250)) < 0.5).astype(float)
    effect = stats.paired_effect(a, b, n_bootstrap=3000, seed=5, max_bootstrap=3000)
    assert stats.bootstrap_statistic(stats.mean_difference(a, b), 4, 250, n_bootstrap=3000, seed=5,
                                     max_bootstrap=3000) == effect
    assert effect["effect"] == pytest.approx(100 * np.mean(a - b))
    # Its replicates: multinomial seed then point weights, weighted mean of the differences.
    draw = np.random.default_rng(5)
    seed_weights = draw.multinomial(4, np.full(4, 0.25), size=3000)
    point_weights = draw.multinomial(250, np.full(250, 1 / 250), size=3000)
    draws = np.einsum("bs,sn,bn->b", seed_weights, 100 * (a - b), point_weights) / (4 * 250)
    assert (effect["ci_low"], effect["ci_high"]) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))


def test_baseline_outside_the_regime_is_uninformative():
    assert stats.verdict(5.0, 9.0, 0.85, 0.5) == "uninformative"
    assert stats.verdict(5.0, 9.0, 0.95, 0.10) == "uninformative"
    assert stats.verdict(5.0, 9.0, 0.95, 0.90) == "uninformative"
    assert stats.verdict(5.0, 9.0, 0.95, None) == "uninformative"
    assert stats.verdict(-1.0, 9.0, 0.95, 0.25) == "inconclusive"


def test_shapes_must_pair():
    with pytest.raises(ValueError, match="equal"):
        stats.paired_effect(np.ones((3, 10)), np.ones((2, 10)))


def test_ratio_interval_covers_the_true_ratio():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.9, 1.1, 40)
    result = stats.ratio_interval(1.05 * base * rng.uniform(0.98, 1.02, 40), base)
    assert result["ci_low"] < 1.05 < result["ci_high"]
    assert result["ci_high"] - result["ci_low"] < 0.03
    with pytest.raises(ValueError):
        stats.ratio_interval([1.0], [1.0])


def _record(**changes):
    record = {
        "id": "c1", "claim": "HE raises PGD-AT robustness", "source": "001 Table 2",
        "verdict": "reproduced", "effect": 3.0, "ci_low": 1.5, "ci_high": 5.0, "unit": "pts",
        "seeds": 5, "n_eval": 360, "baseline_clean": 0.95, "baseline_autoattack": 0.4,
        "dataset": "digits", "eps": 0.3, "epochs": 30, "delta": 1.0, "mc_error": 0.02,
        "ci_low_mc": [1.48, 1.52], "ci_high_mc": [4.98, 5.02], "borderline": False,
        "section": "paper", "arm": "pgdat_he", "against": "pgdat", "metric": "PGD-20",
        "protocol": {"pgdat_he / PGD-20": ["PGD-20: steps=20"], "pgdat / PGD-20": ["PGD-20: steps=20"]},
        "non_inferiority": 0.0, "ceiling": None, "failed_units": [], "baseline_trend": 0.2,
    }
    record.update(changes)
    return record


def test_check_record_enforces_every_rule():
    sizes = {"digits": 360}
    assert stats.check_record(_record(), sizes) == []
    assert "say 'inconclusive'" in stats.check_record(_record(ci_low=-1.0), sizes)[0]
    assert "say 'uninformative'" in stats.check_record(
        _record(baseline_autoattack=0.1), sizes)[0]
    assert "seeds" in stats.check_record(_record(seeds=2), sizes)[0]
    assert "n_eval" in stats.check_record(_record(n_eval=150), sizes)[0]
    assert "missing" in stats.check_record({"id": "c9"}, sizes)[0]
    # An interval inside (-delta, +delta) must be called absent.
    assert "say 'absent'" in stats.check_record(_record(effect=0.2, ci_low=-0.4, ci_high=0.8), sizes)[0]
    # A bound whose Monte-Carlo band reaches an edge must be marked borderline.
    near = dict(ci_low=0.03, ci_low_mc=[0.0, 0.05])
    assert "borderline" in stats.check_record(_record(**near), sizes)[0]
    assert stats.check_record(_record(**near, borderline=True), sizes) == []
    assert "outside its Monte-Carlo band" in stats.check_record(_record(ci_low=1.6), sizes)[0]
    assert "section" in stats.check_record(_record(section="other"), sizes)[0]
    # A baseline still moving decides nothing; one whose convergence was not checked breaks the rules.
    assert "say 'uninformative'" in stats.check_record(_record(baseline_trend=-1.2), sizes)[0]
    assert "not checked" in stats.check_record(_record(baseline_trend=None), sizes)[0]
    # A non-inferiority claim reads its interval against -margin, with no delta.
    assert "declares no delta" in stats.check_record(_record(non_inferiority=1.0), sizes)[0]
    assert stats.check_record(_record(non_inferiority=1.0, delta=0.0, ci_low=-0.5, ci_low_mc=[-0.52, -0.48]),
                              sizes) == []
    # A clean gain the ceiling left no room for: a null interval is uninformative.
    ceiling = {"paper_effect": 2.17, "room": 2.1}
    null = dict(effect=0.0, ci_low=-0.4, ci_high=0.5, ci_low_mc=[-0.42, -0.38], ci_high_mc=[0.48, 0.52])
    assert "say 'uninformative'" in stats.check_record(_record(**null, verdict="absent", ceiling=ceiling), sizes)[0]
    assert stats.check_record(_record(**null, verdict="uninformative", ceiling=ceiling), sizes) == []
    assert stats.check_record(_record(ceiling=ceiling), sizes) == []  # a gain that showed stays


def test_one_convergence_rule_reads_the_passes_after_the_last_decay():
    flat = [0.30, 0.35, 0.40, 0.41, 0.40, 0.41, 0.40, 0.41]
    assert abs(stats.trend(flat)) < 0.5 and stats.converged([stats.trend(flat)])
    rising = [0.30, 0.32, 0.34, 0.36, 0.38, 0.40]
    assert stats.trend(rising) == pytest.approx(8.0) and not stats.converged([stats.trend(rising)])
    # Validation points flipping back and forth (1 point = 0.7 pt on 144) span 2 pts but do not trend.
    jitter = [0.400, 0.414, 0.393, 0.414, 0.400]
    assert 100 * (max(jitter) - min(jitter)) > 2 and stats.converged([stats.trend(jitter)])
    # The jump after a decay is not read: only what follows it (FreeAT: budget epoch 50 of 8 replays
    # falls in pass 7, so passes 7 and 8).
    decayed = [0.2] * 6 + [0.40, 0.401]
    assert stats.trend(decayed) > 10 and abs(stats.trend(decayed, lr_decay_epochs=(40, 50), updates_per_batch=8)) < 0.5
    assert stats.settled(list(range(60)), lr_decay_epochs=(40, 50)) == [55, 56, 57, 58, 59]
    # Seeds average: opposite trends of two seeds converge as an arm; unknown never passes.
    assert stats.converged([1.4, -1.2]) and not stats.converged([1.4, 1.2]) and not stats.converged([None, 0.0])
    assert stats.verdict(2.0, 5.0, 0.95, 0.5, baseline_trend=1.5) == "uninformative"
    assert stats.verdict(2.0, 5.0, 0.95, 0.5, baseline_trend=0.5) == "reproduced"


def test_non_inferiority_is_read_against_its_margin():
    # HAT Table 2 claims similar robustness: HAT not below TRADES by more than M = 1 pt.
    assert stats.verdict(-0.8, 0.5, 0.95, 0.5, non_inferiority=1.0) == "reproduced"
    assert stats.verdict(-6.7, -1.9, 0.95, 0.5, non_inferiority=1.0) == "contradicted"
    assert stats.verdict(-1.5, 0.5, 0.95, 0.5, non_inferiority=1.0) == "inconclusive"
    assert stats.verdict(-0.8, 0.5, 0.85, 0.5, non_inferiority=1.0) == "uninformative"
    # Read against 0, the same interval says nothing of similarity.
    assert stats.verdict(-0.8, 0.5, 0.95, 0.5) == "inconclusive"
    assert stats.borderline([-1.02, -0.98], [0.4, 0.6], 0.0, non_inferiority=1.0)
    assert not stats.borderline([-1.02, -0.98], [0.4, 0.6], 0.0)


def test_a_ceiling_makes_only_a_null_result_uninformative():
    assert stats.verdict(-0.4, 0.5, 0.95, 0.5, delta=1.0, ceiling=True) == "uninformative"
    assert stats.verdict(-0.4, 1.5, 0.95, 0.5, delta=1.0, ceiling=True) == "uninformative"
    assert stats.verdict(0.4, 1.5, 0.95, 0.5, delta=1.0, ceiling=True) == "reproduced"
    assert stats.verdict(-1.5, -0.4, 0.95, 0.5, delta=1.0, ceiling=True) == "contradicted"
    assert stats.verdict(-0.4, 0.5, 0.95, 0.5, delta=1.0) == "absent"
    assert stats.at_ceiling({"paper_effect": 2.17, "room": 2.1})
    assert not stats.at_ceiling({"paper_effect": 2.17, "room": 5.0}) and not stats.at_ceiling(None)


def test_an_interval_inside_delta_is_absent_whatever_its_sign():
    # 7-pgd1 on digits: the paper's +4.2 excluded by [-0.8, 0.0].
    assert stats.verdict(-0.8, 0.0, 0.95, 0.5, delta=1.0) == "absent"
    assert stats.verdict(0.2, 0.7, 0.95, 0.5, delta=1.0) == "absent"
    assert stats.verdict(0.2, 1.3, 0.95, 0.5, delta=1.0) == "reproduced"
    assert stats.verdict(-1.3, 0.5, 0.95, 0.5, delta=1.0) == "inconclusive"
    assert stats.verdict(-0.8, 0.0, 0.95, 0.5) == "inconclusive"  # no delta declared
    assert stats.verdict(-0.8, 0.0, 0.85, 0.5, delta=1.0) == "uninformative"
    assert "absent" in stats.VERDICTS


def test_monte_carlo_band_covers_the_bound_of_other_bootstrap_seeds():
    rng = np.random.default_rng(4)
    a = (rng.random((5, 300)) < 0.6).astype(float)
    b = (rng.random((5, 300)) < 0.5).astype(float)
    # One round each (target unreachable, cap = one round): 30 bootstrap seeds.
    runs = [stats.paired_effect(a, b, n_bootstrap=2000, seed=k, mc_target=0.0, max_bootstrap=2000)
            for k in range(30)]
    lows = np.array([r["ci_low"] for r in runs])
    covered = np.mean([[band[0] <= low <= band[1] for low in lows] for band in (r["ci_low_mc"] for r in runs)])
    assert covered > 0.8  # a 95 % band for one bound, met by other seeds' bounds
    # The band's half-width is about two standard errors of the bound.
    assert 1.0 < np.median([r["mc_error"] for r in runs]) / np.std(lows, ddof=1) < 4.0
    # Rounds are added until the error is below the target.
    target = np.median([r["mc_error"] for r in runs]) / 2
    precise = stats.paired_effect(a, b, n_bootstrap=2000, mc_target=target)
    assert precise["n_bootstrap"] > 2000 and precise["mc_error"] <= target


def test_a_bound_on_a_lattice_near_zero_is_borderline():
    # A statistic with few values (one flipped point = 0.033 pts): 2.5 % of the
    # replicates at 0, the rest at 0.033. The lower bound is 0.033 for some
    # bootstrap seeds and 0 for others: its band spans both, so the verdict
    # "reproduced" is borderline.
    draws = np.r_[np.zeros(250), np.full(9750, 1 / 30)]
    low, _, low_band, high_band = stats._bounds_with_error(draws, 0.95)
    assert low_band[0] == 0.0 and low_band[1] == pytest.approx(1 / 30)
    assert stats.borderline(low_band, [2.0, 2.1], 1.0)
    assert stats.borderline([-0.01, 0.06], [2.0, 2.1], 1.0)  # could be inconclusive
    assert not stats.borderline([0.02, 0.06], [2.0, 2.1], 1.0)
    assert stats.borderline([-0.5, -0.4], [0.97, 1.01], 1.0)  # absent or inconclusive
    assert not stats.borderline([0.4, 0.6], [2.9, 3.1], 1.0)
    # Crossing 0 inside (-delta, +delta) leaves an absent effect absent.
    assert not stats.borderline([-0.79, -0.77], [-0.01, 0.01], 1.0)
