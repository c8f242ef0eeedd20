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
  Square, so the cumulative accuracy after Square is the AutoAttack number),
  then the quick attacks; accuracy-vs-eps curve; class-wise analysis.
- `full`: standard plus MIM and SPSA (through cleverhans), DeepFool, CW-L2,
  untargeted FAB, feature attack, NES, ZOO, RayS (ADBD), transfer from a
  source model if given; the margin along initial adversarial directions;
  common corruptions if the dataset has a tfds corrupted version.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

import he_keras
from he_keras.attacks import core
from he_keras.evaluation import checks as checks_lib
from he_keras.evaluation import classwise as classwise_lib
from he_keras.evaluation import corruptions as corruptions_lib
from he_keras.evaluation import margin as margin_lib
from he_keras.evaluation import presets
from he_keras.evaluation.ensemble import SuiteAttack, predict_logits, run_ensemble
from he_keras.models import head_kind
from he_keras.validation import validate_images, validate_labels

SUITES = presets.SUITES
EPS_MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CURVE_STEPS = (1, 2, 5, 10, 20, 50, 100)
# Steps of the PGD behind the accuracy-vs-eps curve.
EPS_CURVE_STEPS = 20


def _pgd(eps: float, steps: int, step_size: float, norm: str, seed: int) -> core.ProjectedGradientAttack:
    return core.ProjectedGradientAttack(
        eps=eps, step_size=step_size, steps=steps, norm=norm,
        random_start="uniform", keep_best=True, seed=seed,
    )


def _accuracy_under(
    model: Callable, attack: core.ProjectedGradientAttack, x: np.ndarray, y: np.ndarray,
    eps: float, norm: str, batch_size: int,
) -> float:
    spec = SuiteAttack("curve", attack, {})
    return run_ensemble(model, x, y, [spec], eps, norm, batch_size).robust_accuracy


def curve_eps_values(eps: float, norm: str, input_size: int) -> list:
    """Eps values of the accuracy-vs-eps curve.

    Multiples of `eps` from 0 up to the radius that reaches every image of
    the box (1 for L-inf, `sqrt(d)` for L2), which must bring the accuracy of
    any model to chance level.
    """
    top = 1.0 if norm == "linf" else float(np.sqrt(input_size))
    values = {0.0, top} | {min(top, m * eps) for m in EPS_MULTIPLES}
    return sorted(round(v, 6) for v in values)


def accuracy_vs_eps(
    model: Callable, x: np.ndarray, y: np.ndarray, eps: float, norm: str,
    seed: int, batch_size: int,
) -> dict:
    """Accuracy of PGD-20 (CE, uniform start, step 2.5 eps/20) at growing eps."""
    points = []
    for value in curve_eps_values(eps, norm, int(np.prod(x.shape[1:]))):
        start = time.perf_counter()
        if value == 0.0:
            acc = float(np.mean(predict_logits(model, x, batch_size).argmax(1) == y))
        else:
            pgd = _pgd(value, EPS_CURVE_STEPS, 2.5 * value / EPS_CURVE_STEPS, norm, seed)
            acc = _accuracy_under(model, pgd, x, y, value, norm, batch_size)
        points.append({"eps": value, "accuracy": acc, "seconds": time.perf_counter() - start})
    attack = {"attack": "PGD", "objective": "ce", "steps": EPS_CURVE_STEPS,
              "step_size": "2.5*eps/steps", "random_start": "uniform", "seed": seed}
    return {"attack": attack, "points": points}


def accuracy_vs_steps(
    model: Callable, x: np.ndarray, y: np.ndarray, eps: float, norm: str,
    seed: int, batch_size: int,
) -> dict:
    """Accuracy of PGD (CE, step eps/4) with 1 to 100 steps.

    Every run starts from the same seeded random point and keeps the first
    misclassified iterate, so the iterates of a shorter run are a prefix of
    those of a longer one: for a deterministic model accuracy can only fall.
    """
    points = []
    for steps in CURVE_STEPS:
        start = time.perf_counter()
        acc = _accuracy_under(model, _pgd(eps, steps, eps / 4, norm, seed), x, y, eps, norm, batch_size)
        points.append({"steps": steps, "accuracy": acc, "seconds": time.perf_counter() - start})
    attack = {"attack": "PGD", "objective": "ce", "eps": eps, "step_size": eps / 4,
              "random_start": "uniform", "seed": seed}
    return {"attack": attack, "points": points}


def evaluate(
    model: Callable,
    x: Any,
    y: Any,
    num_classes: int,
    suite: str = "quick",
    attacks: Optional[Sequence[SuiteAttack]] = None,
    eps: float = 0.3,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 128,
    source_model: Optional[Callable] = None,
    dataset: str = "",
    model_name: str = "model",
    data_dir: Optional[str] = None,
    verbose: int = 0,
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
    if preset:
        attacks = preset_attacks(
            suite, model, eps=eps, norm=norm, seed=seed, num_classes=num_classes,
            source_model=source_model, x_pool=x, y_pool=y,
        )
    result = run_ensemble(model, x, y, attacks, eps, norm, batch_size, verbose)
    correct = result.clean_correct
    curves = {"accuracy_vs_steps": accuracy_vs_steps(model, x, y, eps, norm, seed, batch_size)}
    if suite != "quick":
        curves["accuracy_vs_eps"] = accuracy_vs_eps(model, x, y, eps, norm, seed, batch_size)
    found = [
        checks_lib.zero_gradient_check(model, x[correct], y[correct], batch_size)
        if correct.any() else None,
        checks_lib.randomness_check(model, x[:batch_size]),
        checks_lib.softmax_output_check(clean_logits),
        checks_lib.black_box_check(result.attacks, result.n),
        checks_lib.steps_curve_check(curves["accuracy_vs_steps"]["points"]),
        checks_lib.single_step_check(result.attacks, presets.FGSM_NAME, presets.PGD_NAME),
    ]
    if "accuracy_vs_eps" in curves:
        found.append(checks_lib.eps_curve_check(curves["accuracy_vs_eps"]["points"], num_classes))
    report = {
        "format": "he_keras.evaluation/1",
        "settings": {
            "suite": suite if preset else f"{suite} (custom attacks)",
            "model": model_name,
            "head": head_kind(model) if hasattr(model, "layers") else "unknown",
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
        "headline": presets.headline(result),
        "attacks": [r.to_json() for r in result.attacks],
        "curves": curves,
        "checks": [c.to_json() for c in found if c is not None],
    }
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
    start = time.perf_counter()
    try:
        out = corruptions_lib.corruption_accuracy(model, dataset, n, data_dir=data_dir, batch_size=batch_size)
    except Exception as err:  # tfds raises many types when data is missing offline.
        return {"dataset": corruptions_lib.corrupted_version(dataset), "skipped": f"{type(err).__name__}: {err}"}
    out["seconds"] = time.perf_counter() - start
    return out
