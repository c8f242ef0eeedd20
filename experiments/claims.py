"""The study's claims decided from the units' per-point outcomes.

Each claim of `experiments.catalogue.CLAIMS` has an effect `mean(a - b)` in
percentage points (`stats.mean_difference`), or its own statistic (the
class-wise claims, `experiments.classwise`), with the two-way (seeds x points)
bootstrap interval of `stats.bootstrap_statistic`, and the verdict
`stats.verdict` of that interval and of the claim's baseline arm (clean and
AutoAttack accuracy averaged over its seeds).

A claim is computed once every seed of the dataset (`arms.SEEDS`) is done for
all of its arms; until then it is listed as pending, never given a verdict.
It is decided on every unit; if some of its units failed (`health`), the
record also carries the decision on the seeds where none did
(`without_failed_units`). Its `protocol` lists the attacks behind each
arm's metric (`outcomes.attacks`): arms compared on one metric must have
faced the same ones (`check`).
"""

from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

import numpy as np

from he_keras.data import load_dataset
from he_keras.files import read_json

from experiments import arms, health, lifecycle, stats, timing
from experiments.catalogue import CLAIMS, Claim
from experiments.outcomes import ON_MODEL, attacks, load_units, outcome, side

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


def terms_of(claim: Claim) -> list:
    """`(arm, metric)` of every term of the claim, in order, once each."""
    return list(dict.fromkeys((arm, metric) for _, arm, metric in claim.a + claim.b))


def described(claim: Claim, units: dict, seeds: Sequence[int]) -> dict:
    """The record fields that say what was compared: `arm`, `against`, `metric`, `protocol`.

    `arm` is side a's first arm, `against` the first other arm of the claim
    (the same arm when the claim contrasts two metrics of one arm);
    `protocol` maps "arm / metric" to the attacks behind it in the arm's
    first seed (`outcomes.attacks`), and `protocol_varies` lists the keys
    whose attacks differ in another seed.
    """
    terms = terms_of(claim)
    arm = terms[0][0]
    metrics = list(dict.fromkeys(m for _, m in terms))
    per_seed = {f"{a} / {m}": [attacks(units[a][s], m) for s in seeds] for a, m in terms}
    return {"arm": arm, "against": next((a for a, _ in terms if a != arm), arm),
            "metric": metrics[0] if len(metrics) == 1 else " vs ".join(metrics),
            "protocol": {key: lists[0] for key, lists in per_seed.items()},
            "protocol_varies": [key for key, lists in per_seed.items()
                                if any(_settings(x) != _settings(lists[0]) for x in lists)]}


def _settings(names: Sequence[str]) -> tuple:
    """An attack list without what each attack recorded about its model (`outcomes.ON_MODEL`)."""
    return tuple(n.split(ON_MODEL)[0] for n in names)


def unequal_protocols(record: dict) -> list:
    """Metrics on which the arms of a record faced different attacks, or whose attacks
    differ between seeds (empty when none)."""
    by_metric: dict = {}
    for key, names in record["protocol"].items():
        by_metric.setdefault(key.split(" / ", 1)[1], []).append(_settings(names))
    varies = [key.split(" / ", 1)[1] for key in record.get("protocol_varies", [])]
    return [m for m, lists in by_metric.items() if len(set(lists)) > 1 or m in varies]


def _interval(claim: Claim, units: dict, seeds: Sequence[int]) -> dict:
    """The claim's effect and bootstrap interval over `seeds` (`stats.bootstrap_statistic`)."""
    if claim.statistic is not None:
        statistic = claim.statistic(units, seeds=seeds, scale=claim.scale)
    else:
        statistic = stats.mean_difference(side(units, claim.a, seeds), side(units, claim.b, seeds), claim.scale)
    n_points = len(units[claim.arms[0]][seeds[0]]["eval"]["points"]["labels"])
    return stats.bootstrap_statistic(statistic, len(seeds), n_points,
                                     mc_target=stats.MC_TARGET * stats.resolution(claim.unit))


def _verdict(claim: Claim, effect: dict, base: dict, ceiling: Optional[dict]) -> dict:
    """Verdict and bounds of an interval, rounded as the record stores them."""
    # The verdict is read off the rounded interval the record stores, so the
    # record obeys its own rule (`stats.check_record`) to the digit.
    low, high = round(effect["ci_low"], 3), round(effect["ci_high"], 3)
    low_band, high_band = ([round(v, 3) for v in effect[k]] for k in ("ci_low_mc", "ci_high_mc"))
    return {
        "verdict": stats.verdict(low, high, base["clean"], base["AutoAttack"], delta=claim.delta,
                                 non_inferiority=claim.non_inferiority, ceiling=stats.at_ceiling(ceiling),
                                 baseline_trend=base["trend"]),
        "effect": round(effect["effect"], 3), "ci_low": low, "ci_high": high,
        "width": round(effect["width"], 3), "mc_error": round(effect["mc_error"], 4),
        "ci_low_mc": low_band, "ci_high_mc": high_band, "n_bootstrap": effect["n_bootstrap"],
        "borderline": stats.borderline(low_band, high_band, claim.delta, claim.non_inferiority),
        "seeds": effect["seeds"], "n_eval": effect["n_eval"],
    }


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
        effect = _interval(claim, units, seeds)
    except KeyError as err:  # a metric added to the protocol after some units ran
        return {"id": claim.id, "claim": claim.claim, "pending": err.args[0]}
    mixed = mixed_corruption_models(claim, units, seeds)
    if mixed:
        return {"id": claim.id, "claim": claim.claim, "pending": mixed}
    base, ceiling = _baseline(claim, units, seeds)
    failed = {s: [f"{claim.dataset}/{arm}/seed{s}" for arm in arm_names if health.failures(units[arm][s])]
              for s in seeds}
    record = {
        "id": claim.id, "claim": claim.claim, "source": claim.source, "section": claim.section,
        **described(claim, units, seeds), **_verdict(claim, effect, base, ceiling),
        "delta": claim.delta, "non_inferiority": claim.non_inferiority, "ceiling": ceiling,
        "unit": claim.unit, "baseline": claim.baseline, "baseline_clean": round(base["clean"], 4),
        "baseline_autoattack": round(base["AutoAttack"], 4),
        "baseline_trend": base["trend"], "dataset": claim.dataset,
        "eps": eps, "epochs": epochs, "paper": claim.paper,
        "failed_units": [u for s in seeds for u in failed[s]],
    }
    healthy = [s for s in seeds if not failed[s]]
    if record["failed_units"]:
        record["without_failed_units"] = (
            _verdict(claim, _interval(claim, units, healthy), *_baseline(claim, units, healthy))
            if healthy else {"verdict": None, "seeds": 0})
    return record


def _baseline(claim: Claim, units: dict, seeds: Sequence[int]) -> tuple:
    """`(base, ceiling)` over `seeds`: the baseline arm's clean, AutoAttack and trend, and
    the room side b leaves below 100 % (None unless the claim declares a ceiling)."""
    base_units = {s: units[claim.baseline][s] for s in seeds}
    trend = arm_trend(base_units)
    base = dict(arm_means({claim.baseline: base_units}, claim.baseline),
                trend=None if trend is None else round(trend, 3))
    ceiling = None
    if claim.ceiling:
        room = 100.0 * (1.0 - float(np.mean(side(units, claim.b, seeds))))
        ceiling = {"paper_effect": claim.ceiling, "room": round(room, 3)}
    return base, ceiling


def failed_units(results: str) -> list:
    """Every failed unit of the study (`health.failed_units`), for `summary.json`.

    Units set aside in `results/superseded/` that failed are listed too, with
    why they were set aside (`superseded_because`): they decide no claim, but
    a failure a retraining replaced must stay visible.
    """
    datasets = sorted({c.dataset for c in CLAIMS})
    out = health.failed_units({d: load_units(results, d) for d in datasets})
    for dataset in datasets:
        for path in sorted(glob.glob(os.path.join(results, "superseded", dataset, "*", "seed*.json"))):
            record = read_json(path, "study unit")
            rules = health.failures(record)
            if rules:
                out.append({"unit": f"{dataset}/{record['arm']}/seed{record['seed']}", "rules": rules,
                            "superseded": record.get("superseded_because")
                            or lifecycle.superseded(record, results) or "set aside"})
    return out


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
    """Every rule a record breaks (`stats.check_record`, the dataset's seed count, and
    the same attacks for every arm compared on one metric)."""
    problems = [p for r in records for p in stats.check_record(r, split_sizes)]
    for r in records:
        for metric in unequal_protocols(r):
            problems.append(f"{r['id']}: its arms faced different attacks on {metric!r} "
                            f"(protocol: {sorted(r['protocol'])})")
    for r in records:
        required = arms.QUICK_SEEDS if quick else arms.SEEDS.get(r["dataset"], 3)
        if r.get("regime_applies", True) and r["seeds"] < required:
            problems.append(f"{r['id']}: {r['seeds']} seeds ({r['dataset']} needs {required})")
    return problems


def unit_trend(record: dict) -> Optional[float]:
    """`stats.trend` of a unit's validation robust accuracy, read after its last LR decay."""
    spec = record["spec"]
    decays = spec.get("lr_decay_epochs") or () if spec.get("lr_schedule", "piecewise") == "piecewise" else ()
    return stats.trend(record["train"]["history"].get("val_adv_accuracy", []), lr_decay_epochs=decays,
                       updates_per_batch=int(spec.get("framework_params", {}).get("replays", 1)))


def arm_trend(by_seed: dict) -> Optional[float]:
    """Mean `unit_trend` over an arm's seeds (None if a seed has none)."""
    trends = [unit_trend(r) for r in by_seed.values()]
    return None if not trends or any(t is None for t in trends) else float(np.mean(trends))
