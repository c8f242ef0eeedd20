"""The evaluation suite: a preset of attacks, curves, checks, one report.

`evaluate(model, x, y, suite="quick")` (or `evaluate_chunks(model, chunks)`
for test points that arrive in chunks, one in memory at a time) runs a
preset (or a custom list of `SuiteAttack`s) with per-point worst-case
bookkeeping, the sanity curves,
the gradient-masking checks and (for `standard` / `full`) the class-wise
analysis, and returns a JSON-ready report dict (`report.write_report` writes
it to disk). Every number in it carries the settings that produced it.

Presets (`he_keras.evaluation.presets`; eps, norm and seed are the caller's):

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
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

import he_keras
from he_keras.attacks import core
from he_keras.defaults import DIGITS_EPS, pgd_step_size, probe_step_size
from he_keras.evaluation import checks as checks_lib
from he_keras.evaluation import classwise as classwise_lib
from he_keras.evaluation import corruptions as corruptions_lib
from he_keras.evaluation import margin as margin_lib
from he_keras.evaluation import points as points_lib
from he_keras.evaluation.corruption_selection import corrupted_version
from he_keras.evaluation.ensemble import (
    EnsembleResult,
    SuiteAttack,
    merge_results,
    predict_logits,
    run_ensemble,
)
from he_keras.evaluation.pgd_eval import evaluation_pgd
from he_keras.evaluation.points import AA_CHAIN, AA_RAW_CHAIN, AUTOATTACK, RAW_SUFFIX
from he_keras.evaluation.presets import FGSM_NAME, PGD_NAME, RAW_OUTPUT, SUITES, head_name, preset_attacks
from he_keras.validation import validate_images, validate_labels

EPS_MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CURVE_STEPS = (1, 2, 5, 10, 20, 50, 100)
# Steps of the PGD behind the accuracy-vs-eps curve.
EPS_CURVE_STEPS = 20


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


def evaluate(model: Callable, x: Any, y: Any, num_classes: int, **settings: Any) -> dict:
    """Runs an evaluation suite on test arrays and returns its report.

    `evaluate_chunks` with the arrays as its one chunk.

    Args:
        model: Callable `model(x, training=False) -> logits` (a Keras model).
        x: Test images in [0, 1], `(n, height, width, channels)`.
        y: Integer labels `(n,)`.
        num_classes: Number of classes.
        **settings: The keyword arguments of `evaluate_chunks` (`suite`,
            `attacks`, `eps`, `norm`, `seed`, `batch_size`, `source_model`,
            `dataset`, `model_name`, `data_dir`, `verbose`, `curves`,
            `points`).

    Returns:
        The JSON-ready report dict (see `evaluate_chunks`).

    Example:

    ```python
    report = evaluate(model, x_test[:500], y_test[:500], 10, suite="standard", eps=0.3)
    print(report["clean_accuracy"], report["robust_accuracy"])
    ```
    """
    return evaluate_chunks(model, [(x, y)], num_classes, **settings)


def _merge_curve(parts: Sequence[dict], sizes: Sequence[int]) -> dict:
    """A curve over all points from the same curve over consecutive chunks.

    Each point's accuracy is recounted over every chunk's points; seconds add up.
    """
    total = sum(sizes)
    points = []
    for index, point in enumerate(parts[0]["points"]):
        rows = [part["points"][index] for part in parts]
        hits = sum(int(round(row["accuracy"] * n)) for row, n in zip(rows, sizes))
        points.append(
            {**point, "accuracy": hits / total, "seconds": sum(row["seconds"] for row in rows)}
        )
    return {"attack": parts[0]["attack"], "points": points}


def evaluate_chunks(
    model: Callable,
    chunks: Iterable[tuple[Any, Any]],
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
    """Runs an evaluation suite over test points that arrive in chunks.

    Only one chunk of images is in memory at a time (the iterable is read
    once, lazily); what is kept across chunks is per point and small (flags,
    predictions, clean logits). Every attack, curve and per-point rule runs
    on each chunk in turn and the results merge exactly
    (`ensemble.merge_results`): accuracies are counted over all points. The
    attacks' random generators run on from one chunk to the next, so the
    report depends on the chunk size only through which random numbers
    each point draws. What needs images rather than outcomes uses the first
    chunk: the feature attack's target pool (`full`), the zero-gradient and
    randomness checks and the margin analysis (`full`), each stating its
    number of points.

    Args:
        model: Callable `model(x, training=False) -> logits` (a Keras model).
        chunks: `(images, labels)` pairs: images in [0, 1], `(m, height,
            width, channels)`, integer labels `(m,)`; e.g.
            `he_keras.data.test_batches(data, limit, chunk_size)`.
        num_classes: Number of classes.
        suite: `"quick"`, `"standard"` or `"full"` (ignored for the attack
            list when `attacks` is given; it still selects the extras).
        attacks: A custom attack list instead of the preset's.
        eps: Radius of the threat model (pixel units).
        norm: `"linf"` or `"l2"`.
        seed: Seed of every attack, curve and random direction; the same
            seed and chunks give the same report (timings aside).
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
        The JSON-ready report dict; `settings` gives the number of points
        `n` and of `chunks`.

    Raises:
        ValueError: for invalid settings, images or labels (naming the
            chunk), a model that does not return `(batch, num_classes)`
            logits, or no test point at all.

    Example:

    ```python
    data = he_keras.data.load_dataset("digits")
    report = evaluate_chunks(model, he_keras.data.test_batches(data, 300, 100), 10, eps=0.3)
    print(report["settings"]["chunks"], report["robust_accuracy"])
    ```
    """
    if suite not in SUITES:
        raise ValueError(f"`suite` must be one of {SUITES}. Received: suite={suite!r}")
    core.validate_attack_params(eps=eps, norm=norm)
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0. Received: eps={eps!r}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    started = time.perf_counter()
    preset = attacks is None
    want_curves = curves
    skipped: list = []
    parts: list = []
    logits: list = []
    curve_parts: dict = {}
    first: dict = {}
    # Counted by hand: `enumerate` would hold the previous chunk while the
    # next one is read.
    index = -1
    for x, y in chunks:
        index += 1
        name = "images" if index == 0 else f"images of chunk {index + 1}"
        x = validate_images(x, name=name)
        y = validate_labels(y, num_classes, len(x))
        clean_logits = predict_logits(model, x, batch_size)
        if clean_logits.shape != (len(x), num_classes):
            raise ValueError(
                f"The model must return logits of shape (batch, {num_classes}). "
                f"Received shape={clean_logits.shape[1:]} per batch"
            )
        if index == 0:
            if preset:
                attacks, skipped = preset_attacks(
                    suite, model, eps=eps, norm=norm, seed=seed, num_classes=num_classes,
                    pool=(x, y), source_model=source_model,
                )
            correct = clean_logits.argmax(1) == y
            first["zero_gradients"] = (
                checks_lib.zero_gradient_check(model, x[correct], y[correct], batch_size)
                if correct.any() else checks_lib.not_run("zero_gradients", "no clean-correct point")
            )
            first["randomness"] = checks_lib.randomness_check(model, x[:batch_size])
            if suite == "full":
                first["margin"] = margin_lib.margin_report(
                    model, source_model or model, x, eps, norm=norm, seed=seed, batch_size=batch_size
                )
        if verbose:
            print(f"Chunk {index + 1}: {len(x)} points")
        parts.append(run_ensemble(model, x, y, attacks, eps, norm, batch_size, verbose))
        logits.append(clean_logits)
        if want_curves:
            curve_parts.setdefault("accuracy_vs_steps", []).append(
                accuracy_vs_steps(model, x, y, eps, norm, seed, batch_size)
            )
            if suite != "quick":
                curve_parts.setdefault("accuracy_vs_eps", []).append(
                    accuracy_vs_eps(model, x, y, eps, norm, seed, batch_size)
                )
        del x, y  # The next chunk is read without this one in memory.
    if not parts:
        raise ValueError("There is no test point to evaluate: `chunks` yielded nothing")
    result = merge_results(parts)
    clean_logits = np.concatenate(logits)
    sizes = [part.n for part in parts]
    curves = {key: _merge_curve(values, sizes) for key, values in curve_parts.items()}
    found = [
        first["zero_gradients"],
        first["randomness"],
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
    head = head_name(model)
    report = {
        "format": "he_keras.evaluation/2",
        "settings": {
            "suite": suite if preset else f"{suite} (custom attacks)",
            "model": model_name,
            "head": head,
            "dataset": dataset,
            "n": result.n,
            "chunks": len(parts),
            "num_classes": num_classes,
            "eps": float(eps),
            "norm": norm,
            "seed": seed,
            "batch_size": batch_size,
            "he_keras_version": he_keras.__version__,
        },
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "n_clean_correct": int(result.clean_correct.sum()),
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
        report["margin"] = first["margin"]
        if corrupted_version(dataset):
            report["corruptions"] = _corruptions(model, dataset, result.n, data_dir, batch_size)
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
        name = corrupted_version(dataset)
        return {"dataset": name, "skipped": f"{type(err).__name__}: {err}"}
