"""Units that no longer belong to the study: detected, retired, moved aside.

A recalibrated regime or a changed arm supersedes the units trained under
the old one; their JSONs move to `results/superseded/` and their run
directories aside, so the units run anew.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

from he_keras.files import read_json
from he_keras.runs import TrainConfig
from he_keras.runs.config import check_run_dir

from experiments.arms import ARMS, RESULTS, RUNS, run_dir, unit_path
from experiments.locks import claim, release
from experiments.units import train_config


def superseded(record: dict, results: str = RESULTS) -> Optional[str]:
    """Why a unit record no longer belongs to the study, or None if it does.

    A record belongs while its arm exists and its training spec equals the
    arm's spec under the current `REGIMES` (a recalibrated regime supersedes
    every unit trained under the old one). A unit that starts from another
    arm's model (`init_arm`) belongs only while that source unit is in
    `results`, belongs itself, and finished before this one (a source that
    finished later was retrained after this unit started from it).
    """
    arm = ARMS.get(record["arm"])
    if arm is None:
        return f"arm {record['arm']!r} is no longer defined"
    why = spec_change(record["spec"], arm.spec(record["dataset"], record["seed"], record.get("quick", False)))
    if why or not arm.init_arm:
        return why
    name = f"{arm.init_arm}/seed{record['seed']}"
    path = unit_path(record["dataset"], arm.init_arm, record["seed"], results)
    try:
        source = read_json(path, "study unit")
    except (OSError, ValueError):
        if os.path.exists(path):  # unreadable, not retired (by another worker) meanwhile
            raise
        return f"its initial model's unit {name} is no longer in the study"
    source_why = superseded(source, results)
    if source_why:
        return f"its initial model's unit {name} is superseded ({source_why})"
    if source["finished"] > record["finished"]:  # "YYYY-MM-DD HH:MM:SS UTC" sorts by time
        return f"trained from an earlier {name} (that unit finished again at {source['finished']})"
    return None


def spec_change(have: dict, want: dict) -> Optional[str]:
    """How training spec `have` differs from `want` (a missing setting counts
    as its `TrainConfig` default), or None if they are the same."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    have, want = (json.loads(json.dumps(dict(defaults, **spec), default=list)) for spec in (have, want))
    changed = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    if not changed:
        return None
    return "trained with other settings: " + ", ".join(
        f"{k}={have.get(k)!r} (now {want.get(k)!r})" for k in changed)


def retire(path: str, results: str = RESULTS) -> str:
    """Moves a superseded unit JSON to `<results>/superseded/<dataset>/<arm>/`, keeping it."""
    rel = os.path.relpath(path, results)
    finished = read_json(path, "study unit").get("finished", "")  # "2026-12-03 00:01:56 UTC"
    stamp = "".join(c for c in finished if c.isdigit()) or "unknown"
    target = os.path.join(results, "superseded", os.path.splitext(rel)[0] + f".{stamp}.json")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(path, target)
    return target


def retire_superseded(dataset: str, arm: str, seed: int, results: str = RESULTS, runs: str = RUNS,
                      quick: bool = False, log=print) -> None:
    """Moves aside what an earlier regime left of a unit, so the unit runs anew.

    A unit JSON that `superseded` rejects goes to `superseded/` (`retire`)
    and its run directory, whose finished checkpoint a resume would only
    evaluate again, is renamed `<run>.superseded-<time>`; so are the JSON and
    run directory of every unit started from its model (arms whose `init_arm`
    it is), unless a live worker holds that unit. A run directory without a
    unit JSON that the runner would refuse to resume (an unfinished run of
    other settings) is renamed too.
    """
    path = unit_path(dataset, arm, seed, results)
    if not claim(path):
        return
    try:
        directory = run_dir(runs, dataset, arm, seed)
        if os.path.exists(path):
            why = superseded(read_json(path, "study unit"), results)
            if why:
                _retire_unit(dataset, arm, seed, why, results, runs, log)
                for derived in (name for name, a in ARMS.items() if a.init_arm == arm):
                    derived_path = unit_path(dataset, derived, seed, results)
                    if claim(derived_path):
                        try:
                            _retire_unit(dataset, derived, seed, f"it started from the retired {arm}/seed{seed}",
                                         results, runs, log)
                        finally:
                            release(derived_path)
        if not os.path.exists(path) and os.path.isdir(directory):
            try:
                check_run_dir(train_config(ARMS[arm].spec(dataset, seed, quick), directory, 0, runs))
            except ValueError as err:
                _move_aside(directory, f"{dataset}/{arm}/seed{seed}: {err}", log)
    finally:
        release(path)


def _retire_unit(dataset: str, arm: str, seed: int, why: str, results: str, runs: str, log) -> None:
    """Retires a unit's JSON (if any) and moves its run directory (if any) aside; the caller holds its lock."""
    path = unit_path(dataset, arm, seed, results)
    if os.path.exists(path):
        log(f"  {dataset}/{arm}/seed{seed}: {why}; moved to {retire(path, results)}")
    directory = run_dir(runs, dataset, arm, seed)
    if os.path.isdir(directory):
        _move_aside(directory, f"{dataset}/{arm}/seed{seed}: its model belongs to the retired unit", log)


def _move_aside(directory: str, why: str, log) -> None:
    moved = directory.rstrip("/") + time.strftime(".superseded-%Y%m%d-%H%M%S")
    os.replace(directory, moved)
    log(f"  {why}; moved to {moved}")
