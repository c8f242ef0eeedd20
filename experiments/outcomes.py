"""Per-point outcomes of the study's units: what each claim's sides are made of.

Metrics (per test point, 1 = correct): `clean`; `PGD-20` (CE on the logits);
`PGD-20 (logits/s)`; `AutoAttack` (AutoAttack-standard, worst case of the
chain on the logits and, for HE heads, the chain on logits / s);
`AutoAttack (logits)` (the chain on the logits only, the same attack for every
head); `worst:<m1>|<m2>|...` (per-point worst case of several metrics);
`scale-invariant` (worst case of APGD-DLR, APGD-T, FAB-T, Square only);
`Temperature-PGD 1/T=<t>`; any attack name of the unit's evaluation.
Continuous metrics (claims with `scale=1` and their own `unit`):
`margin:<R>` (the final model's margin along the direction set R of
`analyses.add_margins`, L2, capped) and `margin-gain:<R>` (that margin minus the
standard model's margin along the same directions). `mCA` (the fraction of
benchmark corruption x severity configurations of `analyses.add_corruptions`
the point survives; its mean is the mean corruption accuracy) is continuous
too but in [0, 1], in percentage points like the 0/1 metrics.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import numpy as np

from he_keras.evaluation import points as points_lib
from he_keras.files import read_json

from experiments import analyses, lifecycle

Term = tuple  # (coefficient, arm, metric)
# The one AutoAttack metric of paired claims: the chain on the logits, the same
# attacks and budget for every head (`AutoAttack` adds a second chain on
# `logits / s` for HE heads only: the user-facing worst case, not a paired one).
PAIRED_AUTOATTACK = "AutoAttack (logits)"
# Attack config entries that are not settings: the seed (per unit, left out) and
# what the attack recorded about the model it ran on (Temperature-PGD's head and
# the 1/T it applied to that head's logits: shown after ON_MODEL, not compared).
NOT_SETTINGS = ("seed",)
ABOUT_MODEL = ("last_model", "inverse_temperatures_on_logits")
ON_MODEL = " | on this model: "


def load_units(results: str, dataset: str) -> dict:
    """`{arm: {seed: record}}` of every finished unit of `dataset`.

    A unit trained under other settings than its arm's current spec
    (`lifecycle.superseded`, e.g. before a regime was recalibrated) is left out.
    """
    units: dict = {}
    for path in sorted(glob.glob(os.path.join(results, dataset, "*", "seed*.json"))):
        record = study_record(path)
        if lifecycle.superseded(record, results) is None:
            units.setdefault(record["arm"], {})[record["seed"]] = record
    return units


def study_record(path: str) -> dict:
    """The unit JSON at `path`."""
    return read_json(path, "study unit")


def outcome(record: dict, metric: str) -> np.ndarray:
    """Per-point outcome of `metric` in one unit: 0/1, or continuous (module docstring)."""
    if metric.startswith("worst:"):
        return np.logical_and.reduce([outcome(record, m) for m in metric[len("worst:"):].split("|")])
    points = record["eval"]["points"]
    survivors = points["survivors"]
    if metric == "AutoAttack (logits)":
        return points_lib.chain_survivors(points)
    if metric == "clean":
        return points_lib.decode_flags(points["clean"])
    if metric == "AutoAttack":
        flags = points_lib.chain_survivors(points)
        if points_lib.has_raw_chain(points):
            flags &= points_lib.chain_survivors(points, raw=True)
        return flags
    if metric == "scale-invariant":
        return points_lib.decode_flags(record["scale_invariant"]["flags"])
    if metric.startswith(("margin:", "margin-gain:")):
        return _margins(record, metric)
    if metric == "mCA":
        if not analyses.corruptions_current(record):
            raise KeyError(f"unit {record['arm']}/seed{record['seed']} has no current corruption benchmark "
                           "(analyses.add_corruptions runs it)")
        corruptions = record["corruptions"]
        return np.asarray(corruptions["point_correct"], np.float64) / corruptions["point_configs"]
    if metric not in survivors:
        raise KeyError(f"unit {record['arm']}/seed{record['seed']} has no metric {metric!r} "
                       "(units.supplement adds it)")
    return points_lib.decode_flags(survivors[metric])


def attacks(record: dict, metric: str) -> list:
    """The attacks behind `metric` in one unit, each as "name: its settings" (seeds left out).

    Two arms compared on a metric faced the same attacks with the same budget
    exactly when these lists are equal up to `ON_MODEL` (`claims.check`):
    what follows it is what the attack recorded about the model (e.g. the 1/T
    Temperature-PGD applied to an HE head's logits, 1/(T s)). `AutoAttack` of
    an HE head lists both chains (the logits and `logits / s`), a linear
    head's one.
    """
    if metric.startswith("worst:"):
        return sorted({a for m in metric[len("worst:"):].split("|") for a in attacks(record, m)})
    if metric == "clean":
        return []
    if metric.startswith(("margin:", "margin-gain:", "mCA")):
        return [metric]  # the same search / benchmark for every arm (analyses)
    if metric == "scale-invariant":
        return sorted(set(attacks(record, "APGD-DLR") + attacks(record, "AutoAttack (logits)")[1:]
                          + ["APGD-T, FAB-T, Square again on the points APGD-CE broke"]))
    names = {"AutoAttack (logits)": list(points_lib.AUTOATTACK),
             "AutoAttack": list(points_lib.AUTOATTACK)
             + ([n + points_lib.RAW_SUFFIX for n in points_lib.AUTOATTACK]
                if points_lib.has_raw_chain(record["eval"]["points"]) else [])}.get(metric, [metric])
    configs = {a["name"]: a["config"] for a in record["eval"]["attacks"]}
    out = []
    for name in names:
        config = sorted(configs.get(name, {}).items())
        text = name + ": " + ", ".join(f"{k}={v}" for k, v in config if k not in NOT_SETTINGS + ABOUT_MODEL)
        about = ", ".join(f"{k}={v}" for k, v in config if k in ABOUT_MODEL)
        out.append(text + (ON_MODEL + about if about else ""))
    return out


def _margins(record: dict, metric: str) -> np.ndarray:
    kind, directions = metric.split(":")
    name = f"unit {record['arm']}/seed{record['seed']}"
    margins = record.get("margins", {})
    final = margins.get(directions)
    initial = margins.get("initial", {}).get(directions)
    if final is None or (kind == "margin-gain" and initial is None):
        raise KeyError(f"{name} has no {metric!r} (analyses.add_margins adds it)")
    values = np.array([np.nan if v is None else v for v in final], np.float64)
    if kind == "margin-gain":
        values = values - np.array([np.nan if v is None else v for v in initial], np.float64)
    if np.isnan(values).any():
        raise KeyError(f"{name}: {metric!r} undefined where PGD left a point unmoved")
    return values


def side(units: dict, terms: Sequence[Term], seeds: Sequence[int]) -> np.ndarray:
    """`(seeds, points)` matrix of a claim side."""
    return np.stack([sum(c * outcome(units[arm][s], m).astype(np.float64) for c, arm, m in terms)
                     for s in seeds])
