"""The study's claims decided from the units' per-point outcomes.

Each claim of `experiments.catalogue.CLAIMS` has an effect `mean(a - b)` in
percentage points (`stats.mean_difference`), or its own statistic (the
class-wise claims, `experiments.classwise`), with the two-way (seeds x points)
bootstrap interval of `stats.bootstrap_statistic`, and the verdict
`stats.verdict` of that interval and of the claim's baseline arm (clean and
AutoAttack accuracy averaged over its seeds).

A claim is computed once every seed of the dataset (`arms.SEEDS`) is done for
all of its arms; until then it is listed as pending, never given a verdict.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from he_keras.data import load_dataset

from experiments import arms, stats, timing
from experiments.catalogue import CLAIMS, Claim
from experiments.outcomes import load_units, outcome, side

def mixed_corruption_models(claim: Claim, units: dict, seeds: Sequence[int]) -> str:
    """Why an `mCA` claim cannot pair its arms yet, or "" if it can.

    `analyses.add_corruptions` scores a unit's own model, or a retraining of
    its spec and seed whose history differs (a unit trained by older code).
    Within a seed both sides must be of one kind, or a code change would
    count as the arms' difference.
    """
    if not any(m == "mCA" for _, _, m in claim.a + claim.b):
        return ""
    arm_names = list(dict.fromkeys(arm for _, arm, m in claim.a + claim.b if m == "mCA"))
    for s in seeds:
        kinds = {units[arm][s]["corruptions"]["model"]["history_max_difference"] > 0 for arm in arm_names}
        if len(kinds) > 1:
            return (f"seed {s}: some arms' corruption benchmark ran on the unit's model, others on a "
                    "retraining whose history differs (retrain them alike)")
    return ""


def arm_means(units: dict, arm: str, metrics: Sequence[str] = ("clean", "AutoAttack")) -> dict:
    """Mean over the arm's seeds of each metric's accuracy."""
    return {m: float(np.mean([outcome(r, m).mean() for r in units[arm].values()])) for m in metrics}


def decide(claim: Claim, units: dict, seeds_required: int, epochs: int, eps: float) -> dict:
    """The `summary.json` record of `claim`, or `{"id", "pending": why}`."""
    seeds = list(range(seeds_required))
    arm_names = list(dict.fromkeys(claim.arms + [claim.baseline]))
    missing = {arm: sum(s not in units.get(arm, {}) for s in seeds) for arm in arm_names}
    missing = {arm: n for arm, n in missing.items() if n > 0}
    if missing:
        return {"id": claim.id, "claim": claim.claim, "pending": missing}
    labels = {tuple(units[arm][s]["eval"]["points"]["labels"]) for arm in arm_names for s in seeds}
    if len(labels) != 1:
        raise ValueError(f"claim {claim.id}: its units were evaluated on different test points")
    try:
        if claim.statistic is not None:
            statistic = claim.statistic(units, seeds=seeds, scale=claim.scale)
        else:
            statistic = stats.mean_difference(side(units, claim.a, seeds), side(units, claim.b, seeds),
                                              claim.scale)
    except KeyError as err:  # a metric added to the protocol after some units ran
        return {"id": claim.id, "claim": claim.claim, "pending": err.args[0]}
    mixed = mixed_corruption_models(claim, units, seeds)
    if mixed:
        return {"id": claim.id, "claim": claim.claim, "pending": mixed}
    effect = stats.bootstrap_statistic(statistic, len(seeds), len(next(iter(labels))),
                                       mc_target=stats.MC_TARGET * stats.resolution(claim.unit))
    base = arm_means({claim.baseline: {s: units[claim.baseline][s] for s in seeds}}, claim.baseline)
    # The verdict is read off the rounded interval the record stores, so the
    # record obeys its own rule (`stats.check_record`) to the digit.
    low, high = round(effect["ci_low"], 3), round(effect["ci_high"], 3)
    low_band, high_band = ([round(v, 3) for v in effect[k]] for k in ("ci_low_mc", "ci_high_mc"))
    return {
        "id": claim.id, "claim": claim.claim, "source": claim.source,
        "verdict": stats.verdict(low, high, base["clean"], base["AutoAttack"], delta=claim.delta),
        "effect": round(effect["effect"], 3), "ci_low": low,
        "ci_high": high, "width": round(effect["width"], 3),
        "delta": claim.delta, "mc_error": round(effect["mc_error"], 4), "ci_low_mc": low_band,
        "ci_high_mc": high_band, "n_bootstrap": effect["n_bootstrap"],
        "borderline": stats.borderline(low_band, high_band, claim.delta),
        "unit": claim.unit, "seeds": effect["seeds"], "n_eval": effect["n_eval"],
        "baseline": claim.baseline, "baseline_clean": round(base["clean"], 4),
        "baseline_autoattack": round(base["AutoAttack"], 4), "dataset": claim.dataset,
        "eps": eps, "epochs": epochs, "paper": claim.paper,
    }


def decide_all(results: str, quick: bool = False) -> tuple[list, list]:
    """`(records, pending)` of every claim whose dataset has units in `results`."""
    records, pending = [], []
    for dataset in sorted({c.dataset for c in CLAIMS}):
        units = load_units(results, dataset)
        if not units:
            pending += [{"id": c.id, "claim": c.claim, "pending": "no unit run"}
                        for c in CLAIMS if c.dataset == dataset]
            continue
        spec = next(iter(next(iter(units.values())).values()))["spec"]
        required = arms.QUICK_SEEDS if quick else arms.SEEDS[dataset]
        for claim in (c for c in CLAIMS if c.dataset == dataset):
            out = decide(claim, units, required, spec["epochs"], spec["eps"])
            (pending if "pending" in out else records).append(out)
    timed, not_timed = timing.records(results)
    return records + timed, pending + not_timed


def test_split_sizes(quick: bool = False) -> dict:
    """Test-split size per study dataset (what every record's `n_eval` must be)."""
    if quick:
        return {d: arms.QUICK_N_TEST for d in arms.REGIMES}
    return {d: int(load_dataset(d).test.cardinality()) for d in arms.REGIMES}


def check(records: Sequence[dict], split_sizes: dict, quick: bool = False) -> list:
    """Every rule a record breaks (`stats.check_record`, and the dataset's seed count)."""
    problems = [p for r in records for p in stats.check_record(r, split_sizes)]
    for r in records:
        required = arms.QUICK_SEEDS if quick else arms.SEEDS.get(r["dataset"], 3)
        if r.get("regime_applies", True) and r["seeds"] < required:
            problems.append(f"{r['id']}: {r['seeds']} seeds ({r['dataset']} needs {required})")
    return problems


def plateau(record: dict, window: int = 5) -> Optional[float]:
    """Change (last - first, points) of the validation robust accuracy over the last `window` epochs."""
    values = record["train"]["history"].get("val_adv_accuracy", [])
    if len(values) < window:
        return None
    return 100.0 * (values[-1] - values[-window])
