"""The attack presets of the evaluation suite: `quick`, `standard`, `full`.

Each preset is a list of `SuiteAttack`s in the order they run, built for a
radius, norm and seed (the caller's); `preset_attacks` also lists the
attacks a preset cannot run here, with the reason (`suite.evaluate` puts
them in the report's `skipped_attacks`).

- `quick`: FGSM, PGD-20, CW-Linf, HE-adaptive PGD, Temperature-PGD.
- `standard`: AutoAttack-standard (APGD-CE -> APGD-T -> FAB-T -> Square, one
  chain) and, for an HE / m-HE head, the same chain on the raw output
  `logits / s`; then the quick attacks.
- `full`: standard plus MIM-20 and SPSA through cleverhans, DeepFool, CW-L2,
  transfer of PGD-20 from a source model, the feature attack, NES, ZOO and
  RayS.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import numpy as np

from he_keras import defaults
from he_keras.attacks import (
    adaptive,
    apgd,
    blackbox,
    cleverhans_adapter,
    core,
    cw,
    deepfool,
    fab,
    feature,
    he_adaptive,
    rays,
    square,
    transfer,
)
from he_keras.defaults import EVAL_PGD_STEPS, pgd_step_size
from he_keras.evaluation.ensemble import SuiteAttack
from he_keras.evaluation.points import AA_CHAIN, AA_RAW_CHAIN, AUTOATTACK, RAW_SUFFIX
from he_keras.evaluation.raw_output import OnRawOutput
from he_keras.models import head_kind
from he_keras.models.heads import walk_layers

SUITES = ("quick", "standard", "full")
FGSM_NAME = "FGSM"
PGD_NAME = "PGD-20"
# (logits, raw output `logits / s`) of the HE and m-HE heads.
RAW_OUTPUT = {"he": ("s·cos θ", "raw cosines cos θ"), "mhe": ("-s·θ", "raw angles -θ")}


def _named(
    attack: Any, name: str, kind: str = "white-box", standalone: bool = True,
    chain: Optional[str] = None,
) -> SuiteAttack:
    return SuiteAttack(name, attack, attack.config(), kind, standalone and chain is None, chain)


def quick_attacks(eps: float, norm: str, seed: int) -> list:
    """FGSM, PGD-20, CW-Linf, HE-adaptive PGD and Temperature-PGD (standalone).

    The iterative ones take 20 steps of `pgd_step_size(eps, 20)` = eps/8
    (`he_keras.defaults`: the one evaluation-PGD rule, also the runner's)
    from a uniform random start; CW-Linf takes 30.
    """
    step = pgd_step_size(eps, EVAL_PGD_STEPS)
    pgd = core.ProjectedGradientAttack(
        eps=eps, step_size=step, steps=20, norm=norm, keep_best=True, seed=seed + 1
    )
    return [
        _named(core.fgsm(eps, norm), FGSM_NAME),
        _named(pgd, PGD_NAME),
        _named(cw.CWLinf(eps, step, 30, norm=norm, seed=seed + 2), "CW-Linf"),
        _named(he_adaptive.HEAdaptivePGD(eps, step, 20, norm=norm, seed=seed + 3), "HE-adaptive"),
        _named(adaptive.TemperaturePGD(eps, step, 20, norm=norm, seed=seed + 10), "Temperature-PGD"),
    ]


def autoattack_standard(
    eps: float, norm: str, seed: int, num_classes: int, head: str = "linear",
    budget: float = 1.0,
) -> tuple[list, list]:
    """APGD-CE -> APGD-T -> FAB-T -> Square with AutoAttack's standard settings.

    They form one chain (each attack runs on the points the earlier ones did
    not break), so the chain's accuracy is the AutoAttack robust accuracy.
    For an HE / m-HE head (`head` `"he"` / `"mhe"`) a second chain runs the
    same attacks on the raw output `logits / s`, as RobustBench evaluates HE
    models. FAB-T and Square exist for L-inf only.

    Args:
        eps: Perturbation budget.
        norm: `"linf"` or `"l2"`.
        seed: Base seed; each attack gets its own offset from it.
        num_classes: Number of classes (APGD-T needs at least 4).
        head: `"linear"`, `"he"`, `"mhe"` or `"unknown"`.
        budget: Fraction of AutoAttack's iterations each attack gets (100
            steps per restart or target, 5,000 Square queries); 1 is the
            standard version. Smaller values give the same chain, weaker
            (toy runs that test a pipeline, not a model); every attack's
            `config()` records the steps and queries it got.

    Returns:
        `(attacks, skipped)`, skipped entries naming the reason.
    """
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1], got {budget}")
    steps = max(1, round(defaults.AUTOATTACK_STEPS * budget))
    queries = max(1, round(defaults.AUTOATTACK_QUERIES * budget))
    targets = min(9, num_classes - 1)
    names = list(AUTOATTACK)
    skipped = []
    if num_classes < 4:
        names.remove("APGD-T")
        skipped.append({"name": "APGD-T", "reason": "the targeted DLR loss needs >= 4 classes"})
    if norm != "linf":
        names = names[:-2]
        skipped += [{"name": n, "reason": "L-inf only"} for n in AUTOATTACK[2:]]

    def build(name: str, seed: int) -> Any:
        if name == "APGD-CE":
            return apgd.APGD(eps, norm, loss="ce", steps=steps, seed=seed)
        if name == "APGD-T":
            return apgd.APGDTargeted(eps, norm, steps=steps, n_target_classes=targets, seed=seed)
        if name == "FAB-T":
            return fab.FABTargeted(eps, steps=steps, n_target_classes=targets, seed=seed)
        return square.Square(eps, n_queries=queries, seed=seed)

    def kind(name: str) -> str:
        return "black-box" if name == "Square" else "white-box"

    offset = {name: 20 + i for i, name in enumerate(AUTOATTACK)}
    attacks = [
        _named(build(n, seed + offset[n]), n, kind(n), chain=AA_CHAIN) for n in names
    ]
    if head in RAW_OUTPUT:
        attacks += [
            _named(OnRawOutput(build(n, seed + offset[n] + len(AUTOATTACK))), n + RAW_SUFFIX,
                   kind(n), chain=AA_RAW_CHAIN)
            for n in names
        ]
    elif head == "unknown":
        skipped.append({"name": AA_RAW_CHAIN, "reason": "the head (and its scale s) is not visible"})
    return attacks, skipped


def _feature_model_reason(model: Callable) -> Optional[str]:
    """Why the feature attack cannot read `model`'s penultimate features."""
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        return "needs a functional Keras model"
    if isinstance(model.layers[-1], keras.layers.TFSMLayer):
        return "a SavedModel exposes no penultimate features"
    return None


def full_extras(
    model: Callable,
    eps: float,
    norm: str,
    seed: int,
    num_classes: int,
    pool: tuple[np.ndarray, np.ndarray],
    source_model: Optional[Callable] = None,
) -> tuple[list, list]:
    """The attacks `full` adds after the standard ones, cheap ones first.

    DeepFool, MIM-20, transfer and RayS run on every clean-correct point
    (RayS without early stopping, for the ADBD); CW-L2, the feature attack,
    SPSA, NES and ZOO only on the points still robust.

    Args:
        model: The evaluated model (the feature attack needs its layers).
        eps: Radius of the threat model.
        norm: `"linf"` or `"l2"`.
        seed: Base seed.
        num_classes: Number of classes.
        pool: `(images, labels)` the feature attack draws its targets from.
        source_model: Substitute model; PGD-20 examples crafted on it are
            transferred (standalone, on every clean-correct point).

    Returns:
        `(attacks, skipped)`.
    """
    step = pgd_step_size(eps, EVAL_PGD_STEPS)
    attacks = [
        _named(deepfool.DeepFool(eps, norm, n_candidates=min(10, num_classes)), "DeepFool"),
        _named(cleverhans_adapter.CleverHansAttack("mim", eps, step, 20, norm=norm, seed=seed + 36),
               "MIM-20"),
        _named(cw.CarliniWagnerL2(eps, steps=200, binary_search_steps=5, norm=norm, seed=seed + 30),
               "CW-L2", standalone=False),
    ]
    if source_model is None:
        skipped = [{"name": "Transfer", "reason": "no source model given"}]
    else:
        base = adaptive.PGDRestarts(eps, step, 20, restarts=1, norm=norm, seed=seed + 35)
        attacks.append(_named(transfer.TransferAttack(source_model, base), "Transfer", "transfer"))
        skipped = []
    if norm != "linf":
        return attacks, skipped + [
            {"name": n, "reason": "L-inf only"} for n in ("Feature", "SPSA", "NES", "ZOO", "RayS")
        ]
    reason = _feature_model_reason(model)
    if reason is None:
        attacks.append(_named(
            feature.FeatureAttack(eps, step_size=eps / 8, steps=50, n_targets=20,
                                  target_pool=pool, seed=seed + 31),
            "Feature", standalone=False))
    else:
        skipped.append({"name": "Feature", "reason": reason})
    attacks += [
        _named(cleverhans_adapter.CleverHansAttack("spsa", eps, steps=100, seed=seed + 37), "SPSA",
               "black-box", False),
        _named(blackbox.NES(eps, step_size=step, steps=100, samples=128, sigma=1e-3, seed=seed + 32),
               "NES", "black-box", False),
        _named(blackbox.ZOO(eps, steps=1000, coords_per_step=128, seed=seed + 33), "ZOO",
               "black-box", False),
        # Standalone and without early stopping: its mean boundary distance
        # over all clean-correct points is the ADBD.
        _named(rays.RayS(eps, query_limit=10000, early_stopping=False, seed=seed + 34), "RayS",
               "black-box"),
    ]
    return attacks, skipped


def preset_attacks(
    suite: str,
    model: Callable,
    eps: float,
    norm: str,
    seed: int,
    num_classes: int,
    pool: Optional[tuple[np.ndarray, np.ndarray]] = None,
    source_model: Optional[Callable] = None,
) -> tuple[list, list]:
    """The attack list of a preset, in run order.

    Args:
        suite: `"quick"`, `"standard"` or `"full"`.
        model: The evaluated model (`full`: the feature attack reads its
            layers).
        eps: Radius of the threat model.
        norm: `"linf"` or `"l2"`.
        seed: Base seed; each attack gets its own offset from it.
        num_classes: Number of classes.
        pool: `(images, labels)` of the evaluation (`full`: feature-attack
            targets).
        source_model: Substitute model of the transfer attack (`full`).

    Returns:
        `(attacks, skipped)`: a list of `SuiteAttack` and a list of
        `{"name", "reason"}` for the preset's attacks that cannot run here.
    """
    if suite not in SUITES:
        raise ValueError(f"`suite` must be one of {SUITES}. Received: suite={suite!r}")
    attacks = quick_attacks(eps, norm, seed)
    if suite == "quick":
        return attacks, []
    standard, skipped = autoattack_standard(eps, norm, seed, num_classes, head_name(model))
    attacks = standard + attacks
    if suite == "full":
        if pool is None:
            raise ValueError("The full suite needs `pool` (the feature attack's targets)")
        extra, more_skipped = full_extras(model, eps, norm, seed, num_classes, pool, source_model)
        attacks += extra
        skipped += more_skipped
    return attacks, skipped


def head_name(model: Callable) -> str:
    """`linear`, `he` or `mhe`; `unknown` when the layers are not visible
    (then HE-adaptive PGD can only run CE)."""
    if not isinstance(model, keras.Model) or any(
        isinstance(layer, keras.layers.TFSMLayer) for layer in walk_layers(model)
    ):
        return "unknown"
    return head_kind(model)
