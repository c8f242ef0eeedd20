"""The study's claim arithmetic on synthetic units (experiments/claims.py)."""

import json
import os

import numpy as np
import pytest

from he_keras.evaluation.corruption_selection import select_corruptions

from experiments import arms, catalogue, classwise, claims, health, lifecycle, outcomes, protocol, report, stats, timing, workers
from experiments import units as unit_lib


def flags(values):
    return "".join("1" if v else "0" for v in values)


def unit(arm, seed, labels, clean, pgd, square, raw_square=None, si=None, epochs_done=60):
    survivors = {"PGD-20": flags(pgd), "Square": flags(square), "APGD-CE": flags(pgd)}
    if raw_square is not None:
        survivors["Square (logits/s)"] = flags(raw_square)
    return {"arm": arm, "seed": seed, "spec": {"epochs": 60},
            "train": {"history": {"loss": [0.5] * epochs_done, "val_adv_accuracy": [0.5] * epochs_done}},
            "eval": {"points": {"labels": list(labels), "clean": flags(clean), "survivors": survivors},
                     "clean_accuracy": float(np.mean(clean)),
                     "attacks": [{"name": name, "config": {"steps": 20, "seed": seed}} for name in survivors]},
            "scale_invariant": {"flags": flags(square if si is None else si)}}


def test_autoattack_outcome_is_the_worst_case_of_both_chains_of_an_he_head():
    record = unit("x_he", 0, [0, 1, 2, 3], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0])
    assert outcomes.outcome(record, "AutoAttack").tolist() == [True, False, False, False]
    assert outcomes.outcome(record, "PGD-20").tolist() == [True, True, True, False]
    with pytest.raises(KeyError, match="no metric"):
        outcomes.outcome(record, "FAB-T")


def test_paired_claim_effect_sign_and_verdict():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 36)
    units = {"base": {}, "better": {}}
    for seed in range(5):
        base = rng.random(360) < 0.5
        better = base | (rng.random(360) < 0.3)  # strictly more robust points
        units["base"][seed] = unit("base", seed, labels, np.ones(360), base, base)
        units["better"][seed] = unit("better", seed, labels, np.ones(360), better, better)
    claim = catalogue.Claim("t", "better is more robust", "test", ((1, "better", "AutoAttack"),),
                         ((1, "base", "AutoAttack"),), "base", "n/a")
    record = claims.decide(claim, units, 5, 60, 0.2)
    assert record["effect"] > 10 and record["ci_low"] > 0 and record["verdict"] == "reproduced"
    assert stats.check_record(record, {"digits": 360}) == []
    flipped = catalogue.Claim("t2", "base is more robust", "test", claim.b, claim.a, "base", "n/a")
    assert claims.decide(flipped, units, 5, 60, 0.2)["verdict"] == "contradicted"
    # A baseline below the regime (60 % clean) decides nothing.
    floor = {k: {s: dict(r, eval=dict(r["eval"], points=dict(r["eval"]["points"], clean=flags(np.arange(360) < 216))))
                 for s, r in v.items()} for k, v in units.items()}
    assert claims.decide(claim, floor, 5, 60, 0.2)["verdict"] == "uninformative"
    assert "pending" in claims.decide(claim, units, 6, 60, 0.2)  # a missing seed: no verdict


def test_paired_arms_face_the_same_attacks_or_the_record_breaks_the_rules():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(10), 36)
    units = {"x": {}, "x_he": {}}
    for seed in range(5):
        plain = rng.random(360) < 0.5
        units["x"][seed] = unit("x", seed, labels, np.ones(360), plain, plain)
        units["x_he"][seed] = unit("x_he", seed, labels, np.ones(360), plain, plain, raw_square=plain)
    sizes = {"digits": 360}
    # The worst case of both chains gives the HE head twice the attacks (the old `1-*-aa`).
    both = catalogue.Claim("t", "HE", "test", ((1, "x_he", "AutoAttack"),), ((1, "x", "AutoAttack"),), "x", "")
    record = claims.decide(both, units, 5, 60, 0.2)
    assert len(record["protocol"]["x_he / AutoAttack"]) == 2 * len(record["protocol"]["x / AutoAttack"])
    assert any("different attacks on 'AutoAttack'" in p for p in claims.check([record], sizes))
    # The chain on the logits is one protocol for both heads.
    paired = catalogue.Claim("t", "HE", "test", ((1, "x_he", outcomes.PAIRED_AUTOATTACK),),
                             ((1, "x", outcomes.PAIRED_AUTOATTACK),), "x", "")
    record = claims.decide(paired, units, 5, 60, 0.2)
    assert (record["arm"], record["against"], record["metric"]) == ("x_he", "x", outcomes.PAIRED_AUTOATTACK)
    assert claims.check([record], sizes) == []
    # What an attack recorded about its model (the head it ran on) is shown, not compared.
    for arm, head in (("x", "linear"), ("x_he", "he")):
        for r in units[arm].values():
            r["eval"]["attacks"][0]["config"]["last_model"] = {"head": head}
    pgd = catalogue.Claim("t", "HE", "test", ((1, "x_he", "PGD-20"),), ((1, "x", "PGD-20"),), "x", "")
    record = claims.decide(pgd, units, 5, 60, 0.2)
    assert "head': 'he'" in record["protocol"]["x_he / PGD-20"][0] and claims.check([record], sizes) == []
    # A budget that differs (steps), in any seed, is caught too, whatever the attack's name.
    units["x"][3]["eval"]["attacks"][0]["config"]["steps"] = 10
    record = claims.decide(pgd, units, 5, 60, 0.2)
    assert record["protocol_varies"] == ["x / PGD-20"]
    assert any("different attacks on 'PGD-20'" in p for p in claims.check([record], sizes))


def test_no_catalogue_claim_gives_one_arm_more_attacks_and_papers_claims_use_their_metric():
    for claim in catalogue.CLAIMS:
        heads = {arms.ARMS[arm].head for _, arm, _ in claim.a + claim.b}
        metrics = {m for _, _, m in claim.a + claim.b}
        assert not (len(heads) > 1 and "AutoAttack" in metrics), claim.id
        assert claim.section in ("paper", "beyond")
    by_id = {c.id: c for c in catalogue.CLAIMS}
    # The papers' claims on the papers' metrics (seed 003 Tables 5 and 6, HAT Table 2).
    assert by_id["16-he-lead"].a[0][2] == "Temperature-PGD 1/T=1"
    assert by_id["17-helis-pgd20"].b == ((1, "pgdat_he", "PGD-20 (logits/s)"),)
    assert by_id["hat-table2-aa"].b[0][1] == "trades_b5" and by_id["hat-table2-aa"].non_inferiority > 0
    assert dict(arms.ARMS["trades_b5"].params)["beta"] == 5.0
    # What no paper claims is asked apart.
    assert by_id["10-scale"].a[0][2] == "PGD-20 (logits/s)"
    for beyond in ("1-pgdat-aa", "3-trades", "4-alp", "9-k3-aa", "17-hecmp-vs-he-aa", "5-fastat-aa",
                   "5-freeat-pgd20", "hat-table5-margin", "003-class-gap-aa"):
        assert by_id[beyond].section == "beyond", beyond
    assert by_id["1-pgdat-pgd20"].section == "paper"


def test_a_failed_unit_set_aside_stays_listed_with_why(tmp_path):
    labels = [c for c in range(10) for _ in range(36)]
    record = dict(unit("fastat", 2, labels, np.ones(360), np.ones(360), np.ones(360), epochs_done=2),
                  dataset="digits", superseded_because="a false alarm of the early stop")
    folder = tmp_path / "superseded" / "digits" / "fastat"
    folder.mkdir(parents=True)
    (folder / "seed2.json").write_text(json.dumps(record))
    assert claims.failed_units(str(tmp_path)) == [
        {"unit": "digits/fastat/seed2", "rules": ["stopped early: 2 of 60 passes"],
         "superseded": "a false alarm of the early stop"}]


def test_a_failed_unit_is_named_and_the_claim_also_decided_without_it():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(10), 36)
    units = {"base": {}, "better": {}}
    for seed in range(5):
        base = rng.random(360) < 0.5
        better = base | (rng.random(360) < 0.2)
        stopped = seed == 2  # stopped after 2 epochs: its robustness is gone
        units["base"][seed] = unit("base", seed, labels, np.ones(360), base, base)
        units["better"][seed] = unit("better", seed, labels, np.ones(360), better & ~stopped, better & ~stopped,
                                     epochs_done=2 if stopped else 60)
    claim = catalogue.Claim("t", "better is more robust", "test", ((1, "better", "PGD-20"),),
                            ((1, "base", "PGD-20"),), "base", "")
    record = claims.decide(claim, units, 5, 60, 0.2)
    assert record["failed_units"] == ["digits/better/seed2"]
    assert record["verdict"] == "inconclusive"  # the failed seed is counted, not hidden
    alone = record["without_failed_units"]
    assert alone["seeds"] == 4 and alone["verdict"] == "reproduced"
    assert health.failures(units["better"][2]) == ["stopped early: 2 of 60 passes"]
    assert health.failed_units({"digits": units}) == [
        {"unit": "digits/better/seed2", "rules": ["stopped early: 2 of 60 passes"]}]
    # FreeAT's budget of 60 epochs is ceil(60 / 8) = 8 passes: not stopped early.
    free = dict(units["base"][0], spec={"epochs": 60, "framework_params": {"replays": 8}},
                train={"history": {"loss": [0.5] * 8}})
    assert health.failures(free) == []
    broken = dict(free, train={"history": {"loss": [0.5] * 7 + [float("nan")]}})
    assert health.failures(broken) == ["non-finite loss: epochs [8]"]
    assert "clean below floor" in health.failures(dict(units["base"][0], eval=dict(
        units["base"][0]["eval"], points=dict(units["base"][0]["eval"]["points"], clean=flags(np.arange(360) < 100)))))[0]


def test_margin_claims_compare_gains_in_l2_units_and_wait_for_missing_margins():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 36)
    ones = np.ones(360)
    units = {"pgdat_ft": {}}
    for seed in range(5):
        record = unit("pgdat_ft", seed, labels, ones, rng.random(360) < 0.6, rng.random(360) < 0.5)
        start = rng.uniform(0.2, 1.0, 360)  # the standard model's margins
        record["margins"] = {"R0": list(start + 2.0), "R1": list(start + 0.5),  # R0 grows by 2, R1 by 0.5
                             "initial": {"R0": list(start), "R1": list(start)}}
        units["pgdat_ft"][seed] = record
    units["pgdat"] = units["pgdat_ft"]  # the regime's baseline
    claim = next(c for c in catalogue.CLAIMS if c.id == "hat-fig4-r1")
    record = claims.decide(claim, units, 5, 60, 0.2)
    assert record["effect"] == pytest.approx(1.5) and record["unit"].startswith("L2")
    assert record["verdict"] == "reproduced" and stats.check_record(record, {"digits": 360}) == []
    # The final margins alone differ by the same 1.5 here; the gains, not the
    # final margins, are compared: equal gains give 0 whatever the start.
    for seed, r in units["pgdat_ft"].items():
        r["margins"]["initial"]["R1"] = list(np.asarray(r["margins"]["R1"]) - 2.0)
    assert claims.decide(claim, units, 5, 60, 0.2)["effect"] == pytest.approx(0.0, abs=1e-9)
    # R5 was not recorded (its replay did not repeat the run): pending, no verdict.
    r5 = next(c for c in catalogue.CLAIMS if c.id == "hat-fig4-r5")
    assert "R5" in claims.decide(r5, units, 5, 60, 0.2)["pending"]
    units["pgdat_ft"][0]["margins"]["R0"][3] = None  # PGD left a point unmoved
    assert "unmoved" in claims.decide(claim, units, 5, 60, 0.2)["pending"]


def test_mca_claim_pairs_per_point_fractions_and_never_mixes_model_provenance():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 36)
    configs = 70
    names, _ = select_corruptions("generated", "digits", image_shape=(8, 8, 1))
    units = {"fw": {}, "fw_he": {}}
    for seed in range(5):
        for arm, gain in (("fw", 0), ("fw_he", 4)):  # +HE: 4 more configurations per point
            record = unit(arm, seed, labels, np.ones(360), np.ones(360), rng.random(360) < 0.5)
            correct = np.minimum(rng.integers(40, 60, 360) + gain, configs)
            record["dataset"] = "digits"
            record["corruptions"] = {"point_correct": correct.tolist(), "point_configs": configs,
                                     "image_shape": [8, 8, 1], "accuracy": dict.fromkeys(names, 0.5),
                                     "model": {"retrained": True, "history_max_difference": 0.05}}
            units[arm][seed] = record
    claim = catalogue.Claim("t", "+HE raises mCA", "test", ((1, "fw_he", "mCA"),), ((1, "fw", "mCA"),), "fw", "n/a")
    record = claims.decide(claim, units, 5, 60, 0.2)
    assert record["verdict"] == "reproduced" and 100 * 3 / configs < record["effect"] < 100 * 5 / configs
    assert stats.check_record(record, {"digits": 360}) == []
    # Seed 2 scored on the unit's own model for one arm only: no verdict.
    units["fw"][2]["corruptions"]["model"] = {"retrained": False, "history_max_difference": 0.0}
    assert "retraining whose history differs" in claims.decide(claim, units, 5, 60, 0.2)["pending"]
    # A benchmark of another set of corruptions (before defocus blur was
    # found not to apply to 8x8 digits) is not paired with today's.
    units["fw"][2]["corruptions"]["model"] = {"retrained": True, "history_max_difference": 0.05}
    units["fw"][2]["corruptions"]["accuracy"]["defocus_blur"] = 0.9
    assert "fw/seed2 has no current corruption benchmark" in claims.decide(claim, units, 5, 60, 0.2)["pending"]
    del units["fw"][2]["corruptions"]
    assert "analyses.add_corruptions runs it" in claims.decide(claim, units, 5, 60, 0.2)["pending"]


def interval(statistic, seeds=5, points=360):
    """The bootstrap record of a class-wise statistic (one round of 4,000 replicates)."""
    return stats.bootstrap_statistic(statistic, seeds, points, n_bootstrap=4000, max_bootstrap=4000)


def test_vulnerable_class_drop_statistic_fires_only_when_weak_classes_lose_more():
    rng = np.random.default_rng(1)
    labels = np.tile(np.arange(10), 36)
    weak_acc = np.linspace(0.3, 0.95, 10)  # class c's robustness under the weak attack

    def units_with(drop_of_class):
        units = {"pgdat": {}}
        for seed in range(5):
            pgd = rng.random(360) < weak_acc[labels]
            broken = rng.random(360) < drop_of_class[labels] / weak_acc[labels]
            units["pgdat"][seed] = unit("pgdat", seed, labels, np.ones(360), pgd, pgd & ~broken)
        return units

    seeds = list(range(5))
    larger_for_weak = units_with(np.linspace(0.25, 0.02, 10))
    effect = interval(classwise.vulnerable_minus_robust_drop(larger_for_weak, "pgdat", seeds))
    assert effect["ci_low"] > 5  # about 23 - 4 = 19 points by construction
    even = units_with(np.full(10, 0.1))
    effect = interval(classwise.vulnerable_minus_robust_drop(even, "pgdat", seeds))
    assert effect["ci_low"] < 0 < effect["ci_high"]


def test_class_gap_statistic_is_cross_fitted_so_chance_gaps_do_not_fire():
    """Fires: classes with AutoAttack accuracy 0.3 ... 0.9. Must not fire:
    every class at 0.6 (a max - min gap on the same points would still be
    about 15 points by chance alone)."""
    labels = np.tile(np.arange(10), 36)

    def units_with(acc_of_class, seed0):
        rng = np.random.default_rng(seed0)
        units = {"pgdat": {}}
        for seed in range(5):
            aa = rng.random(360) < acc_of_class[labels]
            units["pgdat"][seed] = unit("pgdat", seed, labels, np.ones(360), aa, aa)
        return units

    seeds = list(range(5))
    graded_units = units_with(np.linspace(0.3, 0.9, 10), 3)
    graded = interval(classwise.robust_minus_vulnerable(graded_units, "pgdat", seeds))
    assert graded["ci_low"] > 20  # 0.80 - 0.40 = 40 points by construction
    # The catalogue's claim is decided by that statistic.
    record = claims.decide(next(c for c in catalogue.CLAIMS if c.id == "003-class-gap"), graded_units, 5, 60, 0.2)
    assert record["effect"] == pytest.approx(graded["effect"], abs=1e-3) and record["verdict"] == "reproduced"
    flat = units_with(np.full(10, 0.6), 4)
    effect = interval(classwise.robust_minus_vulnerable(flat, "pgdat", seeds))
    assert effect["ci_low"] < 0 < effect["ci_high"]
    per_class = [np.mean([outcomes.outcome(flat["pgdat"][s], "AutoAttack")[labels == c].mean() for s in seeds])
                 for c in range(10)]
    assert 100 * (max(per_class) - min(per_class)) > 5  # the naive gap is not 0


def test_weight_norm_statistic_fires_only_when_robust_classes_have_larger_weights():
    labels = np.tile(np.arange(10), 36)
    acc = np.linspace(0.3, 0.9, 10)
    rng = np.random.default_rng(5)

    def units_with(norms):
        units = {"pgdat": {}}
        for seed in range(5):
            aa = rng.random(360) < acc[labels]
            units["pgdat"][seed] = dict(unit("pgdat", seed, labels, np.ones(360), aa, aa),
                                        class_weight_norms=list(norms))
        return units

    seeds = list(range(5))
    effect = interval(classwise.weight_norm_covariance(units_with(np.linspace(1.0, 2.0, 10)), "pgdat", seeds))
    assert effect["ci_low"] > 10  # sd of the class accuracies (about 19 points) x correlation 1
    # Norms unrelated to the class accuracy (orthogonal to its linear trend).
    unrelated = units_with([2.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0])
    effect = interval(classwise.weight_norm_covariance(unrelated, "pgdat", seeds))
    assert effect["ci_low"] < 0 < effect["ci_high"]
    del unrelated["pgdat"][0]["class_weight_norms"]
    with pytest.raises(KeyError, match="class weight norms"):
        classwise.weight_norm_covariance(unrelated, "pgdat", seeds)


def _reference_contrast(labels, rank, score, seed_weights, point_weights, k=5):
    """`classwise.cross_fitted_contrast` of each replicate, by loops over its weighted data."""
    half = classwise.halves(labels)
    out = []
    for ws, wp in zip(seed_weights, point_weights):
        cell = ws[:, None] * wp[None, :]  # weight of each (seed, point)
        total = 0.0
        for h in (0, 1):
            ranked_on, scored_on = half == h, half == 1 - h
            classes = [c for c in np.unique(labels) if cell[:, ranked_on & (labels == c)].sum() > 0]
            means = [np.sum((cell * rank)[:, ranked_on & (labels == c)]) / cell[:, ranked_on & (labels == c)].sum()
                     for c in classes]
            order = np.asarray(classes)[np.argsort(means, kind="stable")]
            take = min(k, len(order) // 2)
            low = scored_on & np.isin(labels, order[:take])
            high = scored_on & np.isin(labels, order[len(order) - take:])
            if take and cell[:, low].sum() > 0 and cell[:, high].sum() > 0:
                total += wp[scored_on].sum() * (np.sum((cell * score)[:, low]) / cell[:, low].sum()
                                                - np.sum((cell * score)[:, high]) / cell[:, high].sum())
        out.append(100.0 * total / wp.sum())
    return np.array(out)


def test_classwise_statistics_redo_the_ranking_on_each_replicates_weighted_data():
    # 3 points per class: replicates often leave a class out of a half.
    rng = np.random.default_rng(6)
    labels = np.tile(np.arange(10), 6)
    rank = (rng.random((3, 60)) < np.linspace(0.2, 0.8, 10)[labels]).astype(float)
    score = rng.random((3, 60))
    seed_weights = rng.multinomial(3, np.full(3, 1 / 3), size=300)
    point_weights = rng.multinomial(60, np.full(60, 1 / 60), size=300)
    statistic = classwise.cross_fitted_contrast(labels, rank, score)
    np.testing.assert_allclose(statistic(seed_weights, point_weights),
                               _reference_contrast(labels, rank, score, seed_weights, point_weights), atol=1e-9)
    # The weight-norm covariance: weighted class accuracies (a class's weight
    # is its resampled points' weight), seeds' covariances weighted by seed.
    norms = rng.uniform(1.0, 2.0, (3, 10))
    units = {"pgdat": {s: dict(unit("pgdat", s, labels, np.ones(60), rank[s] > 0, rank[s] > 0),
                               class_weight_norms=list(norms[s])) for s in range(3)}}
    covariance = classwise.weight_norm_covariance(units, "pgdat", range(3))
    z = (norms - norms.mean(axis=1, keepdims=True)) / norms.std(axis=1, keepdims=True)
    expected = []
    for ws, wp in zip(seed_weights, point_weights):
        class_weight = np.array([wp[labels == c].sum() for c in range(10)])
        acc = np.array([[np.sum(wp[labels == c] * rank[s, labels == c]) / class_weight[c] if class_weight[c] else 0.0
                         for c in range(10)] for s in range(3)])
        expected.append(100.0 * np.sum(ws * np.mean(z * acc, axis=1)) / ws.sum())
    np.testing.assert_allclose(covariance(seed_weights, point_weights), expected, atol=1e-9)
    # Unit weights give the point estimate: covariance of z and the class accuracies.
    acc = np.array([[rank[s, labels == c].mean() for c in range(10)] for s in range(3)])
    ones = (np.ones((1, 3)), np.ones((1, 60)))
    assert covariance(*ones)[0] == pytest.approx(100.0 * np.mean(z * acc))


def test_class_contrast_interval_counts_the_uncertainty_of_the_class_ranking():
    """Issue 25 (6b). The weak attack barely separates the classes (60 vs 62 %)
    but only the 5 weaker lose 20 points to the strong one: which classes
    count as vulnerable is a coin flip per dataset, and so is most of the
    statistic. Over 60 simulated datasets, the interval must cover the
    statistic's expectation (95 % nominal; here >= 90 %). An interval with
    the ranking fixed at the observed one (the statistic's per-point terms
    bootstrapped, before issue 25) covers it in about 73 % of them."""
    rng = np.random.default_rng(7)
    labels = np.tile(np.arange(10), 36)
    weak = np.r_[np.full(5, 0.60), np.full(5, 0.62)][labels]
    drop = np.r_[np.full(5, 0.2), np.zeros(5)][labels]

    def statistic():
        # Point noise only, the same for the 3 seeds (as for a seed-stable point).
        weak_correct = rng.random(360) < weak
        strong_correct = weak_correct & (rng.random(360) >= drop / weak)
        rank = np.tile(weak_correct.astype(float), (3, 1))
        return classwise.cross_fitted_contrast(labels, rank, rank - np.tile(strong_correct, (3, 1)))

    ones = (np.ones((1, 3)), np.ones((1, 360)))
    expectation = np.mean([statistic()(*ones)[0] for _ in range(1000)])  # about 3.4 points
    intervals = [stats.bootstrap_statistic(statistic(), 3, 360, n_bootstrap=400, max_bootstrap=400, seed=k)
                 for k in range(60)]
    covered = np.mean([r["ci_low"] <= expectation <= r["ci_high"] for r in intervals])
    assert covered >= 0.9


def _timing_run(path, seed, he, linear, load=1.0):
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"framework": "x", "seed": seed, "dataset": "digits", "load_average": load,
                   "seconds": {"he": list(he), "linear": list(linear)}}, f)


@pytest.mark.parametrize("overhead,verdict", [(0.002, "reproduced"), (0.05, "contradicted")])
def test_timing_claim_is_decided_by_the_interval_of_the_paired_ratio(tmp_path, overhead, verdict):
    rng = np.random.default_rng(0)
    for framework in timing.FRAMEWORKS:
        for seed in range(timing.SEEDS):
            linear = 0.02 * rng.lognormal(0, 0.3, 60)  # load swings hit both of a pair alike
            he = linear * (1 + overhead) * rng.lognormal(0, 0.001, 60)
            _timing_run(timing.timing_path(str(tmp_path), framework, seed), seed, he, linear)
    records, pending = timing.records(str(tmp_path))
    assert not pending and len(records) == len(timing.FRAMEWORKS)
    for record in records:
        assert record["verdict"] == verdict
        assert record["overhead_percent"] == pytest.approx(100 * overhead, abs=0.1)
        assert stats.check_record(record, {"digits": 360}) == []
    # One seed timed while other work shared the cores: the ratio measured
    # the contention, and the claim is uninformative whatever its interval.
    _timing_run(timing.timing_path(str(tmp_path), "freeat", 1), 1, he, linear, load=4.0)
    loaded = {r["id"]: r for r in timing.records(str(tmp_path))[0]}["6-freeat"]
    assert loaded["verdict"] == "uninformative" and stats.check_record(loaded, {"digits": 360}) == []
    assert stats.check_record(dict(loaded, verdict=verdict), {"digits": 360}) != []
    os.remove(timing.timing_path(str(tmp_path), "fastat", 2))
    records, pending = timing.records(str(tmp_path))
    assert [p["id"] for p in pending] == ["6-fastat"]


def test_units_of_an_earlier_regime_are_retired_and_used_by_no_claim(tmp_path):
    import json

    results = str(tmp_path)
    current = arms.ARMS["pgdat"].spec("mnist5k", 0)
    old = dict(current, eps=0.25)
    old.pop("eps_warmup_epochs", None)
    for seed, spec in ((0, json.loads(json.dumps(current))), (1, old)):
        path = arms.unit_path("mnist5k", "pgdat", seed, results)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"arm": "pgdat", "dataset": "mnist5k", "seed": seed, "quick": False,
                       "spec": dict(spec, seed=seed), "finished": "2026-12-01 12:16:36 UTC"}, f)
    stale = outcomes.study_record(arms.unit_path("mnist5k", "pgdat", 1, results))
    assert lifecycle.superseded(outcomes.study_record(arms.unit_path("mnist5k", "pgdat", 0, results))) is None
    why = lifecycle.superseded(stale)
    assert "eps=0.25 (now 0.3)" in why and "eps_warmup_epochs=0.0 (now 3)" in why
    assert sorted(outcomes.load_units(results, "mnist5k")["pgdat"]) == [0]
    moved = lifecycle.retire(arms.unit_path("mnist5k", "pgdat", 1, results), results)
    assert moved == os.path.join(results, "superseded", "mnist5k", "pgdat", "seed1.20261201121636.json")
    assert outcomes.study_record(moved) == stale
    assert not os.path.exists(arms.unit_path("mnist5k", "pgdat", 1, results))


def test_a_unit_started_from_another_arms_model_goes_with_that_model(tmp_path):
    import json
    import shutil

    results, runs = str(tmp_path / "results"), str(tmp_path / "runs")
    log = []

    def setup():
        for arm in ("standard", "pgdat_ft"):  # real digits units, pgdat_ft finished a day later
            path = arms.unit_path("digits", arm, 0, results)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy(arms.unit_path("digits", arm, 0), path)
            os.makedirs(os.path.join(runs, "digits", arm, "seed0"), exist_ok=True)  # its finished run

    def moved(arm):
        return sorted(os.listdir(os.path.join(runs, "digits", arm)))

    setup()
    finetuned = outcomes.study_record(arms.unit_path("digits", "pgdat_ft", 0, results))
    source_path = arms.unit_path("digits", "standard", 0, results)
    source = outcomes.study_record(source_path)
    assert lifecycle.superseded(finetuned, results) is None

    def write_source(**changes):
        with open(source_path, "w") as f:
            json.dump(dict(source, **changes), f)

    # The standard model was trained again after pgdat_ft started from it: the
    # unit and its run go (a resume of that run would only re-evaluate the old model).
    write_source(finished="2026-12-31 00:00:00 UTC")
    assert "trained from an earlier standard/seed0" in lifecycle.superseded(finetuned, results)
    lifecycle.retire_superseded("digits", "pgdat_ft", 0, results, runs, log=log.append)
    assert not os.path.exists(arms.unit_path("digits", "pgdat_ft", 0, results))
    assert moved("pgdat_ft")[0].startswith("seed0.superseded-") and len(moved("pgdat_ft")) == 1
    assert moved("standard") == ["seed0"]

    # A source trained under other settings takes what started from it along.
    shutil.rmtree(runs)
    setup()
    write_source(spec=dict(source["spec"], epochs=source["spec"]["epochs"] + 1))
    assert "its initial model's unit standard/seed0 is superseded" in lifecycle.superseded(finetuned, results)
    assert "pgdat_ft" not in outcomes.load_units(results, "digits")
    lifecycle.retire_superseded("digits", "standard", 0, results, runs, log=log.append)
    for arm in ("standard", "pgdat_ft"):
        assert not os.path.exists(arms.unit_path("digits", arm, 0, results))
        assert [d.startswith("seed0.superseded-") for d in moved(arm)] == [True]
    assert "no longer in the study" in lifecycle.superseded(finetuned, results)


def test_a_worker_never_trains_from_a_stale_source(tmp_path, monkeypatch):
    """`work` on the fine-tune alone: its stale `standard` source is retired
    first, so the unit waits instead of regenerating and starting from it."""
    import json
    import shutil

    results, runs = str(tmp_path / "results"), str(tmp_path / "runs")
    for arm in ("standard", "pgdat_ft"):
        path = arms.unit_path("digits", arm, 0, results)
        os.makedirs(os.path.dirname(path))
        shutil.copy(arms.unit_path("digits", arm, 0), path)
    source_path = arms.unit_path("digits", "standard", 0, results)
    source = outcomes.study_record(source_path)
    with open(source_path, "w") as f:
        json.dump(dict(source, spec=dict(source["spec"], epochs=source["spec"]["epochs"] + 1)), f)
    started = []
    monkeypatch.setattr(workers, "regenerate", lambda path, *a, **k: started.append(path) or False)
    monkeypatch.setattr(workers, "run_unit", lambda *a, **k: started.append(a))
    log = []
    assert workers.work([("digits", "pgdat_ft", 0)], results, runs, log=log.append) == 0
    assert started == [] and "waits for standard/seed0" in log[-1]
    assert sorted(os.listdir(os.path.join(results, "superseded", "digits"))) == ["pgdat_ft", "standard"]


def test_a_missing_setting_counts_as_its_default_and_quick_scales_the_warmup():

    spec = arms.ARMS["pgdat"].spec("digits", 0)
    assert lifecycle.spec_change(dict(spec, eps_warmup_epochs=0.0), spec) is None
    assert "steps=3 (now 7)" in lifecycle.spec_change(dict(spec, steps=3), spec)
    quick = arms.ARMS["pgdat"].spec("mnist5k", 0, quick=True)
    full = arms.ARMS["pgdat"].spec("mnist5k", 0)
    assert quick["eps_warmup_epochs"] / quick["epochs"] == full["eps_warmup_epochs"] / full["epochs"]


def test_an_unfinished_run_of_other_settings_is_moved_aside(tmp_path):
    import dataclasses
    import json

    results, runs = str(tmp_path / "results"), str(tmp_path / "runs")
    for arm, eps in (("pgdat", 0.25), ("pgdat_he", 0.3)):
        run_dir = os.path.join(runs, "mnist5k", arm, "seed2")
        os.makedirs(os.path.join(run_dir, "checkpoints"))
        with open(os.path.join(run_dir, "checkpoints", "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "ckpt-6"\n')
        open(os.path.join(run_dir, "checkpoints", "ckpt-6.index"), "w").close()
        config = unit_lib.train_config(arms.ARMS[arm].spec("mnist5k", 2), run_dir, 0, runs)
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            json.dump({"config": dict(dataclasses.asdict(config), eps=eps)}, f)
        lifecycle.retire_superseded("mnist5k", arm, 2, results, runs, log=lambda msg: None)
    moved = sorted(os.listdir(os.path.join(runs, "mnist5k", "pgdat")))
    assert len(moved) == 1 and moved[0].startswith("seed2.superseded-")
    assert os.listdir(os.path.join(runs, "mnist5k", "pgdat_he")) == ["seed2"]  # same settings: resumes


def test_method_text_follows_the_protocol_constants(monkeypatch):
    # The FN attack's step and steps are written from the constants the
    # protocol uses, so the document cannot drift from the code.
    fn = next(line for line in report.method_lines() if "FN in the attack objective" in line)
    assert "PGD-1 / PGD-2 from a zero start, step eps/4 " in fn
    monkeypatch.setattr(report, "PROBE_STEP_FRACTION", 0.5)
    monkeypatch.setattr(protocol, "FN_STEPS", (1, 2, 5))
    fn = next(line for line in report.method_lines() if "FN in the attack objective" in line)
    assert "PGD-1 / PGD-2 / PGD-5 from a zero start, step eps/2 " in fn
