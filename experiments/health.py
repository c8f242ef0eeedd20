"""The study's unit-health rule: which units failed (applied before any claim is decided).

Written after an audit had reported one failed unit (digits/fastat/seed2,
stopped by a false alarm of the FastAT early stop), so not blind to it.

A unit *failed* when its run did not do what its spec asked, whatever its
accuracy would say about the paper:

- `stopped early`: its training history has fewer passes than the spec's
  epochs make (`he_keras.runs.build.training_passes`: FreeAT's budget of
  `epochs` is `ceil(epochs / replays)` passes); an early-stop callback fired,
  or the run broke off;
- `non-finite loss`: a training loss in its history is NaN or infinite;
- `clean below floor`: its clean test accuracy is below `CLEAN_FLOOR`
  (50 %: far above the 10 % of a model collapsed to one class, far below the
  90 % a regime asks of its baseline arm, so only a broken run lands there).

Claims are decided on every unit (`claims.decide`): a method that really is
unstable loses seeds this way, and that is a finding. Each record that
involves a failed unit also carries the decision without the seeds where any
of its units failed, and `summary.json` lists every failed unit.

Example:

```python
failures("digits/fastat/seed2", record)  # ["stopped early: 2 of 60 passes"]
```
"""

from __future__ import annotations

import math

from he_keras.evaluation import points as points_lib
from he_keras.runs.build import training_passes

CLEAN_FLOOR = 0.5
RULES = ("stopped early", "non-finite loss", "clean below floor")


def failures(record: dict) -> list:
    """The health rules (`RULES`) one unit record breaks, each with its numbers; empty if none.

    Args:
        record: A unit JSON of `experiments.units`.

    Returns:
        Strings starting with the rule's name, e.g. `"stopped early: 2 of 60 passes"`.
    """
    out = []
    losses = record["train"]["history"].get("loss", [])
    spec = record["spec"]
    passes = training_passes(int(spec["epochs"]), int(spec.get("framework_params", {}).get("replays", 1)))
    if len(losses) < passes:
        out.append(f"{RULES[0]}: {len(losses)} of {passes} passes")
    bad = [i + 1 for i, v in enumerate(losses) if v is None or not math.isfinite(v)]
    if bad:
        out.append(f"{RULES[1]}: epochs {bad}")
    clean = float(points_lib.decode_flags(record["eval"]["points"]["clean"]).mean())
    if clean < CLEAN_FLOOR:
        out.append(f"{RULES[2]}: clean {100 * clean:.1f} % < {100 * CLEAN_FLOOR:.0f} %")
    return out


def failed_units(units_by_dataset: dict) -> list:
    """Every failed unit: `[{"unit": "digits/fastat/seed2", "rules": [...]}]`, sorted."""
    out = []
    for dataset, units in sorted(units_by_dataset.items()):
        for arm, by_seed in sorted(units.items()):
            for seed, record in sorted(by_seed.items()):
                rules = failures(record)
                if rules:
                    out.append({"unit": f"{dataset}/{arm}/seed{seed}", "rules": rules})
    return out
