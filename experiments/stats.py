"""The statistics behind every verdict of the reproduction study.

A claim compares two arms (say PGD-AT+HE against PGD-AT) trained with the same
seeds (same initialisation, same data order) and evaluated on the same test
points. Its effect is the mean paired difference of per-point correctness,
signed in the paper's direction, in percentage points. Its 95 % interval comes
from a two-way bootstrap that resamples seeds **and** test points, so both the
training noise and the sampling noise of a finite test split are counted
(`paired_effect`). A claim whose statistic is not a mean of per-point terms
(a class ranking estimated from the data, `experiments.classwise`) gets the
same bootstrap with the statistic recomputed in every replicate
(`bootstrap_statistic`).

Each claim declares, before it is decided, a smallest effect of interest
`delta` (1 point for accuracies, `DELTA_POINTS`). Verdicts (nothing else is
ever written):

- `absent`: the interval lies inside (-delta, +delta): the effect, if any, is
  smaller than delta (checked first: an effect shown to be that small is not
  what a paper claims, whatever its sign);
- `reproduced`: the interval lies above 0;
- `contradicted`: the interval lies below 0;
- `inconclusive`: the interval contains 0 (its width says how much was learnt);
- `uninformative`: the baseline missed the regime in which the claim can be
  decided (clean accuracy below `MIN_CLEAN`, AutoAttack accuracy outside
  `AUTOATTACK_RANGE`, or training not converged: `converged`), whatever the
  interval says; or a timing was measured
  while other work shared the cores; or the comparison arm sits so near 100 %
  that the paper's effect had no room to show (`ceiling`) and the interval
  is `absent` or `inconclusive`.

A claim posed as non-inferiority ("similar robustness": side a is not worse
than side b by more than a margin M) reads its interval against -M instead
of 0: `reproduced` above -M, `contradicted` below -M, else `inconclusive`.

Each bound carries its Monte-Carlo band: the distribution-free 95 % interval
of a percentile from the order statistics of the replicates (the percentiles
at p +- 2 sqrt(p (1 - p) / B)), which stays honest when the statistic takes
few distinct values (a bound then sits on a lattice point and may jump to
the next one). Replicates are added until the wider band's half-width (the
record's `mc_error`) is below `MC_TARGET` of the unit's shown digit, and a
verdict that changes for some bounds inside their bands is marked
`borderline`: another bootstrap seed could flip it.

A timing claim (`regime_applies=False`) has no accuracy baseline: its
interval, on a ratio of interleaved paired step times (`ratio_interval`),
decides it, if every timed run had the machine to itself (a 1-minute load
average of at most `MAX_TIMING_LOAD`, the timed process included).

Example:

```python
he = np.array([[1, 1, 0], [1, 0, 1]])     # seeds x test points, correct = 1
plain = np.array([[1, 0, 0], [1, 0, 0]])
effect = paired_effect(he, plain)       # {"effect": 33.3, "ci_low": ..., ...}
verdict(effect["ci_low"], effect["ci_high"], baseline_clean=0.95,
        baseline_autoattack=0.4)
```
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

VERDICTS = ("reproduced", "contradicted", "absent", "inconclusive", "uninformative")
# Smallest effect of interest of an accuracy claim, in percentage points.
DELTA_POINTS = 1.0
MIN_CLEAN = 0.90
AUTOATTACK_RANGE = (0.25, 0.85)
# The one convergence rule (calibration, the report and every verdict): the
# validation robust accuracy's least-squares change across the last
# CONVERGENCE_WINDOW passes logged after the last LR decay (`trend`), averaged
# over an arm's seeds, is smaller than CONVERGENCE_TOLERANCE points.
CONVERGENCE_WINDOW = 5
CONVERGENCE_TOLERANCE = 1.0
# On the 2-core machine the timed process alone keeps the load near 1; above
# this, other work shared the cores and the ratio measures the contention.
MAX_TIMING_LOAD = 1.5
CONFIDENCE = 0.95
# Replicates per bootstrap round; rounds are added until the bounds' Monte-Carlo
# error is below MC_TARGET (at most MAX_BOOTSTRAP replicates).
N_BOOTSTRAP = 10_000
MAX_BOOTSTRAP = 160_000
# Wanted Monte-Carlo error of a bound (half-width of its 95 % band), as a
# share of the last digit shown (0.1 points: 0.05 points).
MC_TARGET = 0.5
SUMMARY_FIELDS = (
    "id", "claim", "source", "verdict", "effect", "ci_low", "ci_high", "unit", "seeds",
    "n_eval", "baseline_clean", "baseline_autoattack", "dataset", "eps", "epochs",
    "delta", "mc_error", "ci_low_mc", "ci_high_mc", "borderline",
    "section", "arm", "against", "metric", "protocol", "non_inferiority", "ceiling", "failed_units",
    "baseline_trend",
)
SECTIONS = ("paper", "beyond")


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def _bounds_with_error(draws: np.ndarray, confidence: float) -> tuple:
    """The percentile interval of `draws` and the Monte-Carlo band of each bound.

    A bound's band is the order-statistic 95 % interval of its percentile:
    the percentiles at `p -+ 2 sqrt(p (1 - p) / B)` of the `B` replicates.

    Returns:
        `(low, high, low_band, high_band)`, each band `[lower, upper]`.
    """
    low, high = _interval(draws, confidence)
    bands = []
    for p in ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0):
        spread = 2.0 * np.sqrt(p * (1.0 - p) / len(draws))
        bands.append([float(np.quantile(draws, max(p - spread, 0.0), method="lower")),
                      float(np.quantile(draws, min(p + spread, 1.0), method="higher"))])
    return low, high, bands[0], bands[1]


def mc_error(low_band: Sequence[float], high_band: Sequence[float]) -> float:
    """Half-width of the wider Monte-Carlo band of the two bounds."""
    return max(low_band[1] - low_band[0], high_band[1] - high_band[0]) / 2.0


def mean_difference(a: np.ndarray, b: np.ndarray, scale: float = 100.0) -> Callable:
    """The statistic of `paired_effect`: the mean paired difference `scale (a - b)`.

    Args:
        a: Per-point outcomes of the arm the paper favours, shape
            `(seeds, points)`; row `k` of `a` and of `b` come from the same seed.
        b: The comparison arm, same shape and pairing.
        scale: Multiplier of the difference (100 gives percentage points).

    Returns:
        `statistic(seed_weights, point_weights)` for `bootstrap_statistic`:
        the weighted mean `sum_s w_s (w_p @ diff[s]) / (S N)` of each replicate.

    Raises:
        ValueError: if the shapes differ or hold no seed or point.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or min(a.shape) < 1:
        raise ValueError(
            f"Paired arms need equal (seeds, points) shapes. Received: {a.shape} and {b.shape}"
        )
    diff = scale * (a - b)
    n_seeds, n_points = diff.shape

    def statistic(seed_weights: np.ndarray, point_weights: np.ndarray) -> np.ndarray:
        per_seed = point_weights @ diff.T / n_points  # (bootstrap, seeds)
        return np.sum(per_seed * seed_weights, axis=1) / n_seeds

    return statistic


def bootstrap_statistic(
    statistic: Callable,
    n_seeds: int,
    n_points: int,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    mc_target: float = MC_TARGET * 0.1,
    max_bootstrap: int = MAX_BOOTSTRAP,
) -> dict:
    """A statistic of seeds x test points with a seeds-and-points bootstrap interval.

    A replicate resamples the seeds and, independently, the test points, as
    multinomial counts: `seed_weights` `(B, n_seeds)` summing to `n_seeds`,
    `point_weights` `(B, n_points)` summing to `n_points`. The statistic
    recomputes, from the weighted data, everything it estimates (a class
    ranking, say), so the interval counts that estimate's noise too.

    Args:
        statistic: `statistic(seed_weights, point_weights) -> (B,)` values,
            in the unit of the effect; unit weights give the point estimate.
        n_seeds: Seeds of the data the statistic reads.
        n_points: Test points of that data.
        n_bootstrap: Replicates per round.
        confidence: Coverage of the interval.
        seed: Seed of the bootstrap's random generator.
        mc_target: Rounds of `n_bootstrap` replicates are added until the
            bounds' Monte-Carlo error (`mc_error`) is below this (in the
            effect's unit).
        max_bootstrap: Most replicates in all.

    Returns:
        `{"effect", "ci_low", "ci_high", "width", "seeds", "n_eval",
        "mc_error", "ci_low_mc", "ci_high_mc", "n_bootstrap"}`, the last
        bands the Monte-Carlo 95 % bands of the bounds.
    """
    rng = np.random.default_rng(seed)
    rounds = []
    while True:
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_bootstrap)
        point_weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_bootstrap)
        rounds.append(statistic(seed_weights, point_weights))
        draws = np.concatenate(rounds)
        low, high, low_band, high_band = _bounds_with_error(draws, confidence)
        if mc_error(low_band, high_band) <= mc_target or len(draws) + n_bootstrap > max_bootstrap:
            break
    return {
        "effect": float(statistic(np.ones((1, n_seeds)), np.ones((1, n_points)))[0]),
        "ci_low": low,
        "ci_high": high,
        "width": high - low,
        "seeds": int(n_seeds),
        "n_eval": int(n_points),
        "mc_error": mc_error(low_band, high_band),
        "ci_low_mc": low_band,
        "ci_high_mc": high_band,
        "n_bootstrap": int(len(draws)),
    }


def paired_effect(
    a: np.ndarray,
    b: np.ndarray,
    scale: float = 100.0,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    mc_target: float = MC_TARGET * 0.1,
    max_bootstrap: int = MAX_BOOTSTRAP,
) -> dict:
    """Mean paired difference `a - b` with a seeds-and-points bootstrap interval.

    `bootstrap_statistic` of `mean_difference(a, b, scale)`.

    Args:
        a: Per-point outcomes of the arm the paper favours, shape
            `(seeds, points)` (1 = correct under the attack, 0 = not); row `k`
            of `a` and of `b` come from the same seed.
        b: The comparison arm, same shape and pairing.
        scale: Multiplier of the effect (100 gives percentage points).
        n_bootstrap: Replicates per round.
        confidence: Coverage of the interval.
        seed: Seed of the bootstrap's random generator.
        mc_target: Rounds of `n_bootstrap` replicates are added until the
            bounds' Monte-Carlo error (`mc_error`) is below this (in the
            effect's unit).
        max_bootstrap: Most replicates in all.

    Returns:
        The record of `bootstrap_statistic`.

    Raises:
        ValueError: if the shapes differ or hold no seed or point.
    """
    statistic = mean_difference(a, b, scale)
    n_seeds, n_points = np.shape(a)
    return bootstrap_statistic(statistic, n_seeds, n_points, n_bootstrap, confidence, seed,
                               mc_target, max_bootstrap)


def ratio_interval(
    numerator: Sequence[float],
    denominator: Sequence[float],
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """Ratio of paired timings (median of per-pair ratios) with a bootstrap interval.

    Args:
        numerator: Times of the arm in the numerator, one per interleaved pair.
        denominator: Times of the other arm, measured in the same pairs.
        n_bootstrap: Bootstrap replicates over pairs.
        confidence: Coverage of the interval.
        seed: Seed of the bootstrap's random generator.

    Returns:
        `{"ratio", "ci_low", "ci_high", "pairs", "ci_low_mc", "ci_high_mc"}`
        (the bounds' Monte-Carlo 95 % bands, in ratio units).
    """
    num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if num.shape != den.shape or num.ndim != 1 or len(num) < 2 or np.any(den <= 0):
        raise ValueError(
            f"Paired timings need two equal-length series of >= 2 positive times. "
            f"Received: {num.shape} and {den.shape}"
        )
    ratios = num / den
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ratios), size=(n_bootstrap, len(ratios)))
    low, high, low_band, high_band = _bounds_with_error(np.median(ratios[picks], axis=1), confidence)
    return {"ratio": float(np.median(ratios)), "ci_low": low, "ci_high": high,
            "pairs": int(len(ratios)), "ci_low_mc": low_band, "ci_high_mc": high_band}


def resolution(unit: str) -> float:
    """The last digit an effect in `unit` is shown to: L2 margins 0.01, the rest 0.1."""
    return 0.01 if unit.startswith("L2") else 0.1


def settled(values: Sequence[float], lr_decay_epochs: Sequence[float] = (), updates_per_batch: int = 1,
            window: int = CONVERGENCE_WINDOW) -> list:
    """The values a convergence check reads: the last `window` logged after the last LR decay.

    Args:
        values: Per-pass validation robust accuracy, in [0, 1].
        lr_decay_epochs: The run's LR decays, in epochs of its budget.
        updates_per_batch: Optimizer updates per batch (FreeAT's replays: its
            budget epoch `e` falls in pass `e / replays`).
        window: Most passes read.

    Returns:
        At least the last two values (fewer only when fewer were logged).
    """
    values = list(values)
    start = int(max(lr_decay_epochs) // updates_per_batch) if len(lr_decay_epochs) else 0
    tail = values[start:][-window:]
    return tail if len(tail) >= 2 else values[-2:]


def trend(values: Sequence[float], **window: object) -> Optional[float]:
    """Least-squares change, in points, across the `settled` values (None if fewer than 2).

    A fitted line, not last minus first: one validation point more or less at
    either end does not decide it.

    Example:

    ```python
    trend([0.3, 0.4, 0.40, 0.41, 0.40, 0.41, 0.40])  # +0.2 (points, last 5)
    ```
    """
    tail = np.asarray(settled(values, **window), np.float64)
    if len(tail) < 2:
        return None
    return float(100.0 * np.polyfit(np.arange(len(tail)), tail, 1)[0] * (len(tail) - 1))


def converged(trends: Sequence[Optional[float]]) -> bool:
    """Whether an arm (one `trend` per seed) has converged: |mean trend| < CONVERGENCE_TOLERANCE.

    Unknown trends (None) never pass.
    """
    if not trends or any(t is None for t in trends):
        return False
    return abs(float(np.mean(trends))) < CONVERGENCE_TOLERANCE


def in_regime(baseline_clean: Optional[float], baseline_autoattack: Optional[float],
              baseline_trend: Optional[float] = None) -> bool:
    """Whether a baseline is in the regime where a claim can be decided.

    `baseline_trend` is the arm's mean `trend`; None skips the convergence
    check (a record must carry it: `check_record`).
    """
    if baseline_clean is None or baseline_autoattack is None:
        return False
    if baseline_trend is not None and not converged([baseline_trend]):
        return False
    low, high = AUTOATTACK_RANGE
    return baseline_clean >= MIN_CLEAN and low <= baseline_autoattack <= high


def verdict(
    ci_low: float,
    ci_high: float,
    baseline_clean: Optional[float],
    baseline_autoattack: Optional[float],
    regime_applies: bool = True,
    load_average: Optional[Sequence[float]] = None,
    delta: float = 0.0,
    non_inferiority: float = 0.0,
    ceiling: bool = False,
    baseline_trend: Optional[float] = None,
) -> str:
    """The one verdict allowed by an interval, its delta and its baseline (module docstring).

    `regime_applies=False` marks a claim about time, not accuracy (a timing
    ratio): no accuracy baseline can make it uninformative, but a load
    average above `MAX_TIMING_LOAD` during any of its timed runs does.
    `delta` = 0 declares no smallest effect of interest (never `absent`).
    `non_inferiority` = M > 0 reads the interval against -M (module
    docstring). `ceiling`: the comparison arm left the paper's effect no room.
    `baseline_trend`: the baseline arm's mean validation `trend` (None: not
    checked).
    """
    if regime_applies and not in_regime(baseline_clean, baseline_autoattack, baseline_trend):
        return "uninformative"
    if load_average is not None and max(load_average) > MAX_TIMING_LOAD:
        return "uninformative"
    found = _interval_verdict(ci_low, ci_high, delta, non_inferiority)
    if ceiling and found in ("absent", "inconclusive"):
        return "uninformative"
    return found


def _interval_verdict(ci_low: float, ci_high: float, delta: float, non_inferiority: float = 0.0) -> str:
    if non_inferiority > 0:
        if ci_low > -non_inferiority:
            return "reproduced"
        return "contradicted" if ci_high < -non_inferiority else "inconclusive"
    if delta > 0 and -delta < ci_low and ci_high < delta:
        return "absent"
    if ci_low > 0:
        return "reproduced"
    if ci_high < 0:
        return "contradicted"
    return "inconclusive"


def at_ceiling(ceiling: Optional[dict]) -> bool:
    """Whether a record's `ceiling` (`{"paper_effect", "room"}` or None) left the effect no room."""
    return bool(ceiling) and ceiling["room"] < ceiling["paper_effect"]


def borderline(low_band: Sequence[float], high_band: Sequence[float], delta: float,
               non_inferiority: float = 0.0) -> bool:
    """Whether the verdict changes for some bounds inside their Monte-Carlo bands.

    Args:
        low_band: `[lower, upper]` Monte-Carlo band of the interval's lower bound.
        high_band: The same for the upper bound.
        delta: The claim's smallest effect of interest (0: none).
        non_inferiority: The claim's non-inferiority margin (0: none).

    Returns:
        True if the interval's verdict (`absent`, `reproduced`,
        `contradicted` or `inconclusive`) is not the same for every pair of
        bounds drawn from the bands.
    """
    verdicts = {_interval_verdict(low, high, delta, non_inferiority) for low in low_band for high in high_band}
    return len(verdicts) > 1


def check_record(record: dict, split_sizes: dict) -> list[str]:
    """Every way a summary record breaks the study's rules (empty when none).

    Args:
        record: One claim of `experiments/results/summary.json`.
        split_sizes: Test-split size per dataset name, e.g. `{"digits": 360}`.

    Returns:
        Human-readable problems; an empty list means the record is valid.
    """
    missing = [name for name in SUMMARY_FIELDS if name not in record]
    if missing:
        return [f"{record.get('id', '?')}: missing fields {missing}"]
    problems = []
    name = record["id"]
    timing = not record.get("regime_applies", True)
    expected = verdict(record["ci_low"], record["ci_high"], record["baseline_clean"],
                       record["baseline_autoattack"], not timing,
                       record.get("load_average") if timing else None, record["delta"],
                       record["non_inferiority"], at_ceiling(record["ceiling"]), record["baseline_trend"])
    if record["verdict"] != expected:
        problems.append(f"{name}: verdict {record['verdict']!r}, its numbers say {expected!r}")
    if not timing and record["baseline_trend"] is None:
        problems.append(f"{name}: its baseline's convergence was not checked (baseline_trend None)")
    if record["section"] not in SECTIONS:
        problems.append(f"{name}: section {record['section']!r} is none of {SECTIONS}")
    if record["non_inferiority"] and record["delta"]:
        problems.append(f"{name}: a non-inferiority claim declares no delta (its margin is the threshold)")
    if record["borderline"] != borderline(record["ci_low_mc"], record["ci_high_mc"], record["delta"],
                                          record["non_inferiority"]):
        problems.append(f"{name}: borderline {record['borderline']} does not follow its bounds' "
                        f"Monte-Carlo bands {record['ci_low_mc']}, {record['ci_high_mc']}")
    for bound in ("ci_low", "ci_high"):
        band = record[f"{bound}_mc"]
        if not band[0] <= record[bound] <= band[1]:
            problems.append(f"{name}: {bound} {record[bound]} outside its Monte-Carlo band {band}")
    if record["seeds"] < 3:
        problems.append(f"{name}: {record['seeds']} seeds (at least 3)")
    size = None if timing else split_sizes.get(record["dataset"])
    if size is not None and record["n_eval"] != size:
        problems.append(f"{name}: n_eval {record['n_eval']}, the test split holds {size}")
    if not record["ci_low"] <= record["effect"] <= record["ci_high"]:
        problems.append(f"{name}: effect {record['effect']} outside its interval")
    return problems
