"""The per-point result format: attack names, chains and 0/1 outcome strings.

An evaluation report keeps, for every test point, whether it was classified
correctly and whether it survived each attack, as strings of `"0"` / `"1"`
(one character per point, in the order of `labels`):

```
{"labels": [3, 1, ...], "clean": "1101...", "robust": "1001...",
 "survivors": {"PGD-20": "1001...", "APGD-CE": ..., "Square (logits/s)": ...}}
```

`survivors[name]` is the outcome of one attack: for a standalone attack its
own accuracy, for an attack of a chain the chain's accuracy up to and
including it. This module writes (`encode`) and reads (`decode`,
`chain_survivors`) that format and names the AutoAttack chains; the suite,
the study and its claims all go through it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

# AutoAttack-standard, in the order its attacks run.
AUTOATTACK = ("APGD-CE", "APGD-T", "FAB-T", "Square")
# The AutoAttack chains: on the logits, and (HE / m-HE heads) on logits / s.
AA_CHAIN = "AutoAttack-standard"
AA_RAW_CHAIN = "AutoAttack-standard on logits / s"
# Appended to an attack's name when it attacks the raw output logits / s.
RAW_SUFFIX = " (logits/s)"


def encode_flags(values: Iterable) -> str:
    """Per-point booleans as a `"0"` / `"1"` string.

    Args:
        values: One truth value per point.

    Returns:
        The string, one character per point.
    """
    return "".join("1" if v else "0" for v in values)


def decode_flags(flags: str) -> np.ndarray:
    """A `"0"` / `"1"` string as a boolean array (inverse of `encode_flags`).

    Args:
        flags: One character per point.

    Returns:
        A boolean array of the string's length.
    """
    return np.frombuffer(flags.encode(), dtype=np.uint8) == ord("1")


def encode(result) -> dict:
    """The per-point outcomes of an ensemble run.

    Args:
        result: A `he_keras.evaluation.ensemble.EnsembleResult`.

    Returns:
        `{"labels", "clean", "robust", "survivors"}` (module docstring).
    """
    return {
        "labels": [int(v) for v in result.labels],
        "clean": encode_flags(result.clean_correct),
        "robust": encode_flags(result.robust),
        "survivors": {r.name: encode_flags(r.survivors) for r in result.attacks},
    }


def decode(points: dict) -> dict:
    """Every outcome of a `points` record as boolean arrays.

    Args:
        points: A record written by `encode`.

    Returns:
        `{"labels": int array, "clean": bool array, "robust": bool array,
        "survivors": {attack name: bool array}}`.
    """
    return {
        "labels": np.asarray(points["labels"], np.int64),
        "clean": decode_flags(points["clean"]),
        "robust": decode_flags(points["robust"]),
        "survivors": {name: decode_flags(flags) for name, flags in points["survivors"].items()},
    }


def chain_survivors(points: dict, raw: bool = False) -> np.ndarray:
    """The points that survived a whole AutoAttack chain.

    Args:
        points: A record written by `encode`.
        raw: The chain on the raw output `logits / s` instead of the logits.

    Returns:
        A boolean array (the last attack of the chain's survivors).

    Raises:
        KeyError: if that chain did not run.
    """
    return decode_flags(points["survivors"][AUTOATTACK[-1] + (RAW_SUFFIX if raw else "")])


def has_raw_chain(points: dict) -> bool:
    """Whether the AutoAttack chain on `logits / s` ran (HE / m-HE heads)."""
    return AUTOATTACK[-1] + RAW_SUFFIX in points["survivors"]
