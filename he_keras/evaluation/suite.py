"""The evaluation suite: presets of attacks, curves, checks, one report.

`evaluate(model, x, y, suite="quick")` runs a preset (or a custom list of
`SuiteAttack`s) with per-point worst-case bookkeeping, the sanity curves,
the gradient-masking checks and (for `standard` / `full`) the class-wise
analysis, and returns a JSON-ready report dict (`report.write_report` writes
it to disk). Every number in it carries the settings that produced it.

Presets (eps, norm and seed are the caller's):

- `quick`: FGSM, PGD-20, CW-Linf, HE-adaptive PGD, Temperature-PGD; the
  accuracy-vs-steps curve (cheap, and the "more steps help the model" check
  needs it).
- `standard`: AutoAttack-standard first (APGD-CE -> APGD-T -> FAB-T ->
  Square, one chain, so its accuracy is the AutoAttack number); for an HE /
  m-HE head a second AutoAttack chain on the raw output `logits / s` (the
  cosines, what RobustBench's HE entry outputs), the headline being the
  per-point worst case of both, each labelled; then the quick attacks;
  accuracy-vs-eps curve; class-wise analysis.
- `full`: standard (FAB is its FAB-T) plus MIM-20 and SPSA through
  cleverhans, DeepFool, CW-L2, transfer of PGD-20 from a source model if
  given, the feature attack, NES, ZOO and RayS (with the ADBD); the margin
  along initial adversarial directions (of the source model, else of the
  model itself); common corruptions if the dataset has a tfds corrupted
  version.

An attack a preset cannot run here (an L-inf-only attack under L2, the
feature attack on a SavedModel, transfer without a source model) is listed
in the report's `skipped_attacks` with the reason.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np

import he_keras
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
    rays,
    square,
    transfer,
)
from he_keras import defaults
from he_keras.defaults import DIGITS_EPS, EVAL_PGD_STEPS, pgd_step_size, probe_step_size
from he_keras.evaluation import checks as checks_lib
from he_keras.evaluation import classwise as classwise_lib
from he_keras.evaluation import corruptions as corruptions_lib
from he_keras.evaluation import margin as margin_lib
from he_keras.evaluation.ensemble import (
    EnsembleResult,
    SuiteAttack,
    evaluation_pgd,
    predict_logits,
    run_ensemble,
)
from he_keras.evaluation import points as points_lib
from he_keras.evaluation.points import AA_CHAIN, AA_RAW_CHAIN, AUTOATTACK, RAW_SUFFIX
from he_keras.evaluation.raw_output import OnRawOutput
from he_keras.models import head_kind
from he_keras.models.heads import walk_layers
from he_keras.validation import validate_images, validate_labels

SUITES = ("quick", "standard", "full")
FGSM_NAME = "FGSM"
PGD_NAME = "PGD-20"
# (logits, raw output `logits / s`) of the HE and m-HE heads.
RAW_OUTPUT = {"he": ("s·cos θ", "raw cosines cos θ"), "mhe": ("-s·θ", "raw angles -θ")}
EPS_MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CURVE_STEPS = (1, 2, 5, 10, 20, 50, 100)
# Steps of the PGD behind the accuracy-vs-eps curve.
EPS_CURVE_STEPS = 20


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
        _named(adaptive.HEAdaptivePGD(eps, step, 20, norm=norm, seed=seed + 3), "HE-adaptive"),
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
    standard, skipped = autoattack_standard(eps, norm, seed, num_classes, _head_name(model))
    attacks = standard + attacks
    if suite == "full":
        if pool is None:
            raise ValueError("The full suite needs `pool` (the feature attack's targets)")
        extra, more_skipped = full_extras(model, eps, norm, seed, num_classes, pool, source_model)
        attacks += extra
        skipped += more_skipped
    return attacks, skipped


def _head_name(model: Callable) -> str:
    """`linear`, `he` or `mhe`; `unknown` when the layers are not visible
    (then HE-adaptive PGD can only run CE)."""
    if not isinstance(model, keras.Model) or any(
        isinstance(layer, keras.layers.TFSMLayer) for layer in walk_layers(model)
    ):
        return "unknown"
    return head_kind(model)


def _chain_complete(result: EnsembleResult, chain: str, suffix: str = "") -> bool:
    names = [r.name for r in result.attacks if r.chain == chain]
    return names == [name + suffix for name in AUTOATTACK]


def _headline(result: EnsembleResult, head: str) -> dict:
    """AutoAttack-standard accuracy (when its chain ran complete) and the RayS
    ADBD (mean boundary distance over the points where it found one).

    For an HE / m-HE head, AutoAttack ran on the logits and on the raw output
    `logits / s`: both numbers are given, labelled, and "AutoAttack-standard"
    is their per-point worst case (a point counts only if it survived both).
    """
    out = {}
    if _chain_complete(result, AA_CHAIN):
        robust = result.chain_robust[AA_CHAIN]
        if _chain_complete(result, AA_RAW_CHAIN, RAW_SUFFIX):
            raw = result.chain_robust[AA_RAW_CHAIN]
            out["AutoAttack-standard"] = float(np.mean(robust & raw))
            logits, raw_output = RAW_OUTPUT[head]
            out[f"AutoAttack-standard on logits {logits}"] = float(np.mean(robust))
            out[f"AutoAttack-standard on {raw_output} (logits / s, as RobustBench)"] = (
                float(np.mean(raw))
            )
        else:
            out["AutoAttack-standard"] = float(np.mean(robust))
    for r in result.attacks:
        if r.name == "RayS" and "last_distances" in r.summary:
            out["RayS ADBD"] = r.summary["last_distances"]["mean"]
    return out


def _curve_accuracy(
    model: Callable, attack: core.ProjectedGradientAttack, x: np.ndarray, y: np.ndarray,
    norm: str, seed: int, batch_size: int,
) -> float:
    """Accuracy under `attack`, its random starts drawn afresh from `seed`."""
    attack.rng.reset_from_seed(seed)
    spec = SuiteAttack("curve", attack, {})
    return run_ensemble(model, x, y, [spec], attack.eps, norm, batch_size).robust_accuracy


def curve_eps_values(eps: float, norm: str, input_size: int) -> list:
    """Eps values of the accuracy-vs-eps curve.

    Multiples of `eps` from 0 up to the radius that reaches every image of
    the box (1 for L-inf, `sqrt(d)` for L2), which must bring the accuracy of
    any model to zero.
    """
    top = 1.0 if norm == "linf" else float(np.sqrt(input_size))
    values = {0.0, top} | {min(top, m * eps) for m in EPS_MULTIPLES}
    return sorted(round(v, 6) for v in values)


def accuracy_vs_eps(
    model: Callable, x: np.ndarray, y: np.ndarray, eps: float, norm: str,
    seed: int, batch_size: int,
) -> dict:
    """Accuracy of PGD-20 (CE, uniform start, step `pgd_step_size`) at growing eps.

    One compiled PGD serves every point (`with_budget`), so the curve adds
    one trace per input shape.
    """
    pgd = evaluation_pgd(eps, EPS_CURVE_STEPS, pgd_step_size(eps, EPS_CURVE_STEPS), norm, seed)
    points = []
    for value in curve_eps_values(eps, norm, int(np.prod(x.shape[1:]))):
        start = time.perf_counter()
        if value == 0.0:
            acc = float(np.mean(predict_logits(model, x, batch_size).argmax(1) == y))
        else:
            attack = pgd.with_budget(eps=value, step_size=pgd_step_size(value, EPS_CURVE_STEPS))
            acc = _curve_accuracy(model, attack, x, y, norm, seed, batch_size)
        points.append({"eps": value, "accuracy": acc, "seconds": time.perf_counter() - start})
    attack = {**pgd.config(), "eps": "see points", "step_size": "2.5*eps/steps"}
    return {"attack": attack, "points": points}


def accuracy_vs_steps(
    model: Callable, x: np.ndarray, y: np.ndarray, eps: float, norm: str,
    seed: int, batch_size: int, step_size: Optional[float] = None,
) -> dict:
    """Accuracy of PGD (CE, step eps/4 by default) with 1 to 100 steps.

    Every run starts from the same seeded random point with the same step,
    so the iterates of a shorter run are a prefix of those of a longer one,
    and a run returns a misclassified iterate whenever one occurred: for a
    deterministic model accuracy can only fall, and what it still loses
    between the last two step counts is what the attack had not reached.
    One compiled PGD serves every point (`with_budget`).
    """
    step_size = probe_step_size(eps) if step_size is None else step_size
    pgd = evaluation_pgd(eps, CURVE_STEPS[0], step_size, norm, seed)
    points = []
    for steps in CURVE_STEPS:
        start = time.perf_counter()
        acc = _curve_accuracy(model, pgd.with_budget(steps=steps), x, y, norm, seed, batch_size)
        points.append({"steps": steps, "accuracy": acc, "seconds": time.perf_counter() - start})
    return {"attack": {**pgd.config(), "steps": "see points"}, "points": points}


def evaluate(
    model: Callable,
    x: Any,
    y: Any,
    num_classes: int,
    suite: str = "quick",
    attacks: Optional[Sequence[SuiteAttack]] = None,
    eps: float = DIGITS_EPS,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 128,
    source_model: Optional[Callable] = None,
    dataset: str = "",
    model_name: str = "model",
    data_dir: Optional[str] = None,
    verbose: int = 0,
    curves: bool = True,
    points: bool = False,
) -> dict:
    """Runs an evaluation suite and returns its report.

    Args:
        model: Callable `model(x, training=False) -> logits` (a Keras model).
        x: Test images in [0, 1], `(n, height, width, channels)`.
        y: Integer labels `(n,)`.
        num_classes: Number of classes.
        suite: `"quick"`, `"standard"` or `"full"` (ignored for the attack
            list when `attacks` is given; it still selects the extras).
        attacks: A custom attack list instead of the preset's.
        eps: Radius of the threat model (pixel units).
        norm: `"linf"` or `"l2"`.
        seed: Seed of every attack, curve and random direction; the same
            seed gives the same report (timings aside).
        batch_size: Points per attack call.
        source_model: Substitute model for the transfer attack and the
            margin directions (`full` only).
        dataset: Dataset name (for the corruption benchmark and the report).
        model_name: Name of the model in the report.
        data_dir: tfds data directory of the corrupted datasets.
        verbose: 1 prints progress bars.
        curves: Compute the accuracy-vs-steps (and, beyond `quick`,
            accuracy-vs-eps) curves; without them their checks say "not run".
        points: Add `report["points"]`, per-point outcomes as strings of
            "0"/"1" (one character per test point, in order): `labels`,
            `clean`, `robust` (the worst case), and per attack its
            `survivors` (`AttackResult.survivors`): what paired statistics
            over test points need.

    Returns:
        The JSON-ready report dict.

    Example:

    ```python
    report = evaluate(model, x_test[:500], y_test[:500], 10, suite="standard", eps=0.3)
    print(report["clean_accuracy"], report["robust_accuracy"])
    ```
    """
    if suite not in SUITES:
        raise ValueError(f"`suite` must be one of {SUITES}. Received: suite={suite!r}")
    core.validate_attack_params(eps=eps, norm=norm)
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0. Received: eps={eps!r}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    x = validate_images(x)
    y = validate_labels(y, num_classes, len(x))
    started = time.perf_counter()
    clean_logits = predict_logits(model, x, batch_size)
    if clean_logits.shape != (len(x), num_classes):
        raise ValueError(
            f"The model must return logits of shape (batch, {num_classes}). "
            f"Received shape={clean_logits.shape[1:]} per batch"
        )
    preset = attacks is None
    skipped: list = []
    if preset:
        attacks, skipped = preset_attacks(
            suite, model, eps=eps, norm=norm, seed=seed, num_classes=num_classes,
            pool=(x, y), source_model=source_model,
        )
    result = run_ensemble(model, x, y, attacks, eps, norm, batch_size, verbose)
    want_curves = curves
    correct = result.clean_correct
    curves = {}
    if want_curves:
        curves["accuracy_vs_steps"] = accuracy_vs_steps(model, x, y, eps, norm, seed, batch_size)
        if suite != "quick":
            curves["accuracy_vs_eps"] = accuracy_vs_eps(model, x, y, eps, norm, seed, batch_size)
    found = [
        checks_lib.zero_gradient_check(model, x[correct], y[correct], batch_size)
        if correct.any() else checks_lib.not_run("zero_gradients", "no clean-correct point"),
        checks_lib.randomness_check(model, x[:batch_size]),
        checks_lib.softmax_output_check(clean_logits),
        checks_lib.black_box_check(result.attacks, result.n),
        checks_lib.steps_curve_check(curves["accuracy_vs_steps"]["points"], result.n)
        if "accuracy_vs_steps" in curves
        else checks_lib.not_run("accuracy_vs_steps", "curves were turned off (curves=False)"),
        checks_lib.single_step_check(result.attacks, FGSM_NAME, PGD_NAME),
        checks_lib.eps_curve_check(
            curves["accuracy_vs_eps"]["points"], result.n, len(np.unique(result.clean_pred))
        ) if "accuracy_vs_eps" in curves
        else checks_lib.not_run("accuracy_vs_eps", "the quick suite computes no accuracy-vs-eps curve"
                                if want_curves else "curves were turned off (curves=False)"),
    ]
    head = _head_name(model)
    report = {
        "format": "he_keras.evaluation/2",
        "settings": {
            "suite": suite if preset else f"{suite} (custom attacks)",
            "model": model_name,
            "head": head,
            "dataset": dataset,
            "n": result.n,
            "num_classes": num_classes,
            "eps": float(eps),
            "norm": norm,
            "seed": seed,
            "batch_size": batch_size,
            "he_keras_version": he_keras.__version__,
        },
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "n_clean_correct": int(correct.sum()),
        "n_robust": int(result.robust.sum()),
        "headline": _headline(result, head),
        "attacks": [r.to_json() for r in result.attacks],
        "skipped_attacks": skipped,
        "curves": curves,
        "checks": [c.to_json() for c in found],
    }
    if points:
        report["points"] = points_lib.encode(result)
    if suite != "quick":
        report["classwise"] = classwise_lib.classwise_report(result, clean_logits, num_classes, model)
    if suite == "full":
        report["margin"] = margin_lib.margin_report(
            model, source_model or model, x, eps, norm=norm, seed=seed, batch_size=batch_size
        )
        if corruptions_lib.corrupted_version(dataset):
            report["corruptions"] = _corruptions(model, dataset, len(x), data_dir, batch_size)
    report["seconds"] = time.perf_counter() - started
    return report


def _corruptions(
    model: Callable, dataset: str, n: int, data_dir: Optional[str], batch_size: int
) -> dict:
    try:
        return corruptions_lib.corruption_accuracy(
            model, dataset, n, data_dir=data_dir, batch_size=batch_size
        )
    except Exception as err:  # tfds raises many types when data is missing offline.
        name = corruptions_lib.corrupted_version(dataset)
        return {"dataset": name, "skipped": f"{type(err).__name__}: {err}"}
