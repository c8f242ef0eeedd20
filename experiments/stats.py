"""The statistics behind every verdict of the reproduction study.

A claim compares two arms (say PGD-AT+HE against PGD-AT) trained with the same
seeds (same initialisation, same data order) and evaluated on the same test
points. Its effect is the mean paired difference of per-point correctness,
signed in the paper's direction, in percentage points. Its 95 % interval comes
from a two-way bootstrap that resamples seeds **and** test points, so both the
training noise and the sampling noise of a finite test split are counted.

Verdicts (nothing else is ever written):

- `reproduced`: the interval lies above 0;
- `contradicted`: the interval lies below 0;
- `inconclusive`: the interval contains 0 (its width says how much was learnt);
- `uninformative`: the baseline missed the regime in which the claim can be
  decided (clean accuracy below `MIN_CLEAN`, or AutoAttack accuracy outside
  `AUTOATTACK_RANGE`), whatever the interval says; or a timing was measured
  while other work shared the cores.

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

from typing import Optional, Sequence

import numpy as np

VERDICTS = ("reproduced", "contradicted", "inconclusive", "uninformative")
MIN_CLEAN = 0.90
AUTOATTACK_RANGE = (0.25, 0.85)
# On the 2-core machine the timed process alone keeps the load near 1; above
# this, other work shared the cores and the ratio measures the contention.
MAX_TIMING_LOAD = 1.5
CONFIDENCE = 0.95
N_BOOTSTRAP = 10_000
SUMMARY_FIELDS = (
    "id", "claim", "source", "verdict", "effect", "ci_low", "ci_high", "unit", "seeds",
    "n_eval", "baseline_clean", "baseline_autoattack", "dataset", "eps", "epochs",
)


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_effect(
    a: np.ndarray,
    b: np.ndarray,
    scale: float = 100.0,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """Mean paired difference `a - b` with a seeds-and-points bootstrap interval.

    Args:
        a: Per-point outcomes of the arm the paper favours, shape
            `(seeds, points)` (1 = correct under the attack, 0 = not); row `k`
            of `a` and of `b` come from the same seed.
        b: The comparison arm, same shape and pairing.
        scale: Multiplier of the effect (100 gives percentage points).
        n_bootstrap: Bootstrap replicates.
        confidence: Coverage of the interval.
        seed: Seed of the bootstrap's random generator.

    Returns:
        `{"effect", "ci_low", "ci_high", "width", "seeds", "n_eval"}`.

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
    rng = np.random.default_rng(seed)
    # A bootstrap replicate resamples seeds and points independently; as
    # multinomial weights, its mean is w_seeds' diff w_points / (S N).
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_bootstrap)
    point_weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_bootstrap)
    per_seed = point_weights @ diff.T / n_points  # (bootstrap, seeds)
    draws = np.sum(per_seed * seed_weights, axis=1) / n_seeds
    low, high = _interval(draws, confidence)
    return {
        "effect": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "width": high - low,
        "seeds": int(n_seeds),
        "n_eval": int(n_points),
    }


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
        `{"ratio", "ci_low", "ci_high", "pairs"}`.
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
    low, high = _interval(np.median(ratios[picks], axis=1), confidence)
    return {"ratio": float(np.median(ratios)), "ci_low": low, "ci_high": high,
            "pairs": int(len(ratios))}


def in_regime(baseline_clean: Optional[float], baseline_autoattack: Optional[float]) -> bool:
    """Whether a baseline is in the regime where a claim can be decided."""
    if baseline_clean is None or baseline_autoattack is None:
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
) -> str:
    """The one verdict allowed by an interval and its baseline (module docstring).

    `regime_applies=False` marks a claim about time, not accuracy (a timing
    ratio): no accuracy baseline can make it uninformative, but a load
    average above `MAX_TIMING_LOAD` during any of its timed runs does.
    """
    if regime_applies and not in_regime(baseline_clean, baseline_autoattack):
        return "uninformative"
    if load_average is not None and max(load_average) > MAX_TIMING_LOAD:
        return "uninformative"
    if ci_low > 0:
        return "reproduced"
    if ci_high < 0:
        return "contradicted"
    return "inconclusive"


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
                       record.get("load_average") if timing else None)
    if record["verdict"] != expected:
        problems.append(f"{name}: verdict {record['verdict']!r}, its numbers say {expected!r}")
    if record["seeds"] < 3:
        problems.append(f"{name}: {record['seeds']} seeds (at least 3)")
    size = None if timing else split_sizes.get(record["dataset"])
    if size is not None and record["n_eval"] != size:
        problems.append(f"{name}: n_eval {record['n_eval']}, the test split holds {size}")
    if not record["ci_low"] <= record["effect"] <= record["ci_high"]:
        problems.append(f"{name}: effect {record['effect']} outside its interval")
    return problems
