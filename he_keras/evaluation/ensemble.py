"""Per-point worst-case bookkeeping over a sequence of attacks.

The rules (those of AutoAttack's `run_standard_evaluation`):

- a point counts only if the model classifies it correctly when clean;
- attacks run in order; each one that is not `standalone` only sees the points
  still robust (clean-correct and not broken by an earlier attack);
- a point broken by any attack is non-robust, so the robust accuracy is the
  fraction of points that survive every attack (never an average);
- the suite never trusts an attack: its output is projected onto the eps-ball
  around the clean input intersected with [0, 1] (`core.project` + clip),
  non-finite outputs are replaced by the clean input, and the prediction on the
  projected point decides. An attack can neither report a false success nor
  a point outside the threat model.

A `standalone` attack (a cheap white-box one) runs on every clean-correct
point, so its own accuracy is exact; the ensemble then counts only the points
that were still robust. Attacks of a `chain` (e.g. the four attacks of
AutoAttack-standard) run on the clean-correct points no earlier member of the
same chain broke, so the chain's own accuracy is exact wherever it runs in
the ensemble. Other attacks run only on the still-robust points and report no
standalone accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from he_keras.attacks import core

KINDS = ("white-box", "black-box", "transfer")
# An attack's raw output may exceed the ball by float round-off only.
_BALL_TOLERANCE = 1e-5


@dataclasses.dataclass
class SuiteAttack:
    """An attack as the suite runs it.

    Attributes:
        name: Display name, e.g. `"PGD-20"`.
        attack: The attack, a callable `(model, x, y) -> x_adv`.
        config: Its settings, written into the report next to every number.
        kind: `"white-box"`, `"black-box"` (gradient-free; used by the
            gradient-masking checks) or `"transfer"`.
        standalone: Run on every clean-correct point so that the attack's own
            accuracy is exact (cheap attacks), instead of only on the points
            still robust.
        chain: Name of the chain the attack belongs to (not standalone): it
            runs on the clean-correct points that no earlier attack of the
            chain broke, so the chain's accuracy is exact.
    """

    name: str
    attack: Any
    config: dict
    kind: str = "white-box"
    standalone: bool = True
    chain: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"`kind` must be one of {KINDS}. Received: kind={self.kind!r} "
                f"for attack {self.name!r}"
            )
        if self.standalone and self.chain is not None:
            raise ValueError(
                f"A chained attack is not standalone. Received: standalone=True and "
                f"chain={self.chain!r} for attack {self.name!r}"
            )

    def run(self, model: Callable, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Calls the attack on one batch and returns its raw output."""
        return np.asarray(self.attack(model, x, y), dtype=np.float32)

    def extras(self) -> dict:
        """Per-run diagnostics the attack exposes (minimal norms, distances)."""
        out = {}
        for attr in ("last_norms", "last_distances"):
            values = getattr(self.attack, attr, None)
            if values is not None:
                out[attr] = np.asarray(values, dtype=np.float64).reshape(-1)
        return out


@dataclasses.dataclass
class AttackResult:
    """What one attack did inside the ensemble.

    Attributes:
        name: Attack name.
        kind: Attack kind.
        config: Attack settings.
        n_attacked: Points the attack ran on.
        n_broken: Points it broke that no earlier attack had broken.
        accuracy: Its standalone accuracy over all points (None when the
            attack only ran on still-robust points).
        cumulative_accuracy: Robust accuracy of the ensemble after it.
        chain: The chain the attack belongs to, or None.
        chain_accuracy: Accuracy under the attacks of its chain so far (None
            outside a chain).
        seconds: Wall time of the attack, re-check included.
        correct: Per-point flags "correct under this attack alone" (None when
            not standalone); clean-misclassified points are False.
        survivors: Per-point flags of the points still correct once this
            attack has run on its pool: `correct` for a standalone attack,
            the chain's survivors so far for a chain member, the ensemble's
            survivors so far otherwise.
        n_outside_ball: Outputs the attack returned outside the eps-ball or
            [0, 1] (projected back before the re-check).
        n_nonfinite: Outputs with NaN/inf (replaced by the clean input).
        summary: Statistics of what the attack exposes (e.g. median minimal
            norm, mean boundary distance = ADBD for RayS).
        extras: The per-point values behind `summary` (`SuiteAttack.extras`),
            kept so that results of consecutive chunks merge exactly.
    """

    name: str
    kind: str
    config: dict
    n_attacked: int
    n_broken: int
    accuracy: Optional[float]
    cumulative_accuracy: float
    chain: Optional[str]
    chain_accuracy: Optional[float]
    seconds: float
    correct: Optional[np.ndarray]
    survivors: np.ndarray
    n_outside_ball: int
    n_nonfinite: int
    summary: dict
    extras: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON-ready record (per-point flags and values left out)."""
        out = dataclasses.asdict(self)
        for key in ("correct", "survivors", "extras"):
            out.pop(key)
        return out


@dataclasses.dataclass
class EnsembleResult:
    """Per-point worst case of a sequence of attacks.

    Attributes:
        labels: True labels, shape `(n,)`.
        clean_pred: Clean predictions, shape `(n,)`.
        clean_correct: Clean-correct flags, shape `(n,)`.
        robust: Flags of the points that survived every attack.
        adv_pred: Prediction on the worst-case input x* (the clean
            prediction where no attack succeeded).
        broken_by: Index of the first attack that broke each point, -1 if
            none did.
        attacks: One `AttackResult` per attack, in order.
        eps: Radius of the threat model.
        norm: `"linf"` or `"l2"`.
        chain_robust: Per chain, the flags of the points that survived every
            attack of the chain.
    """

    labels: np.ndarray
    clean_pred: np.ndarray
    clean_correct: np.ndarray
    robust: np.ndarray
    adv_pred: np.ndarray
    broken_by: np.ndarray
    attacks: list
    eps: float
    norm: str
    chain_robust: dict = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of evaluated points."""
        return int(len(self.labels))

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy."""
        return float(self.clean_correct.mean())

    @property
    def robust_accuracy(self) -> float:
        """Accuracy under the per-point worst case of all attacks."""
        return float(self.robust.mean())


def predict_logits(model: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of `model` in inference mode, batch by batch, as float32 NumPy."""
    out = [
        np.asarray(tf.cast(model(x[i : i + batch_size], training=False), tf.float32))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


def threat_model_projection(
    x: np.ndarray, x_adv: np.ndarray, eps: float, norm: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps attack outputs into the threat model (eps-ball ∩ [0, 1]).

    Args:
        x: Clean inputs.
        x_adv: Attack outputs, same shape.
        eps: Radius.
        norm: `"linf"` or `"l2"`.

    Returns:
        `(x_proj, outside, nonfinite)`: the projected inputs and per-point
        flags of outputs that were outside the ball or [0, 1] (beyond float
        round-off) and of outputs holding NaN/inf (replaced by `x`).
    """
    if x_adv.shape != x.shape:
        raise ValueError(
            f"An attack returned shape {x_adv.shape} for inputs of shape {x.shape}"
        )
    flat = x_adv.reshape(len(x), -1)
    nonfinite = ~np.isfinite(flat).all(axis=1)
    x_adv = np.where(nonfinite.reshape((-1,) + (1,) * (x.ndim - 1)), x, x_adv)
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    flat = x_adv.reshape(len(x), -1)
    outside = (size > eps + _BALL_TOLERANCE) | (flat.min(axis=1) < -_BALL_TOLERANCE)
    outside |= flat.max(axis=1) > 1.0 + _BALL_TOLERANCE
    projected = core.project(tf.constant(x_adv - x), eps, norm)
    x_proj = np.clip(x + np.asarray(projected), 0.0, 1.0).astype(np.float32)
    return x_proj, outside, nonfinite


def _summarize(extras: dict, eps: float) -> dict:
    """Statistics of per-point norms / distances; inf marks "none found"."""
    summary = {}
    for key, values in extras.items():
        finite = values[np.isfinite(values)]
        summary[key] = {
            "n": int(len(values)),
            "n_not_found": int(len(values) - len(finite)),
            "fraction_within_eps": float(np.mean(values <= eps)) if len(values) else None,
            "mean": float(finite.mean()) if len(finite) else None,
            "median": float(np.median(finite)) if len(finite) else None,
        }
    return summary


def run_ensemble(
    model: Callable,
    x: np.ndarray,
    y: np.ndarray,
    attacks: Sequence[SuiteAttack],
    eps: float,
    norm: str = "linf",
    batch_size: int = 128,
    verbose: int = 0,
) -> EnsembleResult:
    """Runs `attacks` in order and keeps the per-point worst case.

    Args:
        model: Callable `model(x, training=False) -> logits`.
        x: Clean inputs in [0, 1], float32 NumPy `(n, ...)`.
        y: Integer labels, `(n,)`.
        attacks: The attacks, in the order they run.
        eps: Radius of the threat model.
        norm: `"linf"` or `"l2"`.
        batch_size: Points per attack call.
        verbose: 1 shows a progress bar.

    Returns:
        An `EnsembleResult`.

    Example:

    ```python
    pgd = ProjectedGradientAttack(eps=0.3, step_size=0.0375, steps=20, keep_best=True)
    result = run_ensemble(model, x, y, [SuiteAttack("PGD-20", pgd, pgd.config())], 0.3)
    print(result.clean_accuracy, result.robust_accuracy)
    ```
    """
    core.validate_attack_params(eps=eps, norm=norm)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int32)
    clean_pred = predict_logits(model, x, batch_size).argmax(axis=1).astype(np.int32)
    clean_correct = clean_pred == y
    robust = clean_correct.copy()
    adv_pred = clean_pred.copy()
    broken_by = np.full(len(y), -1, dtype=np.int32)
    chain_robust: dict = {}
    results = []
    for index, spec in enumerate(attacks):
        start = time.perf_counter()
        if spec.chain is not None:
            chain_robust.setdefault(spec.chain, clean_correct.copy())
        pool = (
            clean_correct if spec.standalone
            else robust if spec.chain is None else chain_robust[spec.chain]
        )
        targets = np.flatnonzero(pool)
        correct = clean_correct.copy() if spec.standalone else None
        extras: dict = {}
        n_outside = n_nonfinite = n_new = 0
        progress = None
        if verbose:
            print(f"[{index + 1}/{len(attacks)}] {spec.name} on {len(targets)} points")
            progress = keras.utils.Progbar(
                len(targets), stateful_metrics=["robust_acc"], unit_name="point"
            )
        for lo in range(0, len(targets), batch_size):
            idx = targets[lo : lo + batch_size]
            raw = spec.run(model, x[idx], y[idx])
            for key, values in spec.extras().items():
                extras.setdefault(key, []).append(values)
            x_proj, outside, nonfinite = threat_model_projection(x[idx], raw, eps, norm)
            n_outside += int(outside.sum())
            n_nonfinite += int(nonfinite.sum())
            pred = predict_logits(model, x_proj, batch_size).argmax(axis=1)
            hit = pred != y[idx]
            if correct is not None:
                correct[idx[hit]] = False
            if spec.chain is not None:
                chain_robust[spec.chain][idx[hit]] = False
            new = hit & robust[idx]
            n_new += int(new.sum())
            robust[idx[new]] = False
            broken_by[idx[new]] = index
            adv_pred[idx[new]] = pred[new]
            if progress is not None:
                progress.add(len(idx), values=[("robust_acc", float(robust.mean()))])
        extras = {k: np.concatenate(v) for k, v in extras.items()}
        results.append(
            AttackResult(
                name=spec.name,
                kind=spec.kind,
                # Attacks that adapt to the model (HE scale, objectives run)
                # report the settings they actually used once they have run.
                config={**spec.config, **(spec.attack.config() if hasattr(spec.attack, "config") else {})},
                n_attacked=int(len(targets)),
                n_broken=n_new,
                accuracy=None if correct is None else float(correct.mean()),
                cumulative_accuracy=float(robust.mean()),
                chain=spec.chain,
                chain_accuracy=(
                    None if spec.chain is None else float(chain_robust[spec.chain].mean())
                ),
                seconds=time.perf_counter() - start,
                correct=correct,
                survivors=(
                    correct if correct is not None
                    else robust.copy() if spec.chain is None
                    else chain_robust[spec.chain].copy()
                ),
                n_outside_ball=n_outside,
                n_nonfinite=n_nonfinite,
                summary=_summarize(extras, eps),
                extras=extras,
            )
        )
    return EnsembleResult(
        labels=y,
        clean_pred=clean_pred,
        clean_correct=clean_correct,
        robust=robust,
        adv_pred=adv_pred,
        broken_by=broken_by,
        attacks=results,
        eps=float(eps),
        norm=norm,
        chain_robust=chain_robust,
    )


def _count(fraction: Optional[float], n: int) -> int:
    """The number of points behind an accuracy over `n` points."""
    return int(round(fraction * n))


def merge_results(parts: Sequence[EnsembleResult]) -> EnsembleResult:
    """One `EnsembleResult` for consecutive chunks of test points.

    Each part ran the same attacks, in the same order, on its own points
    (`run_ensemble` on one chunk); every per-point rule is per point, so the
    merged result is the ensemble over all the points in order: per-point
    flags are concatenated, counts and seconds add up, accuracies are
    recomputed over all points and the attacks' summaries from their
    concatenated per-point values.

    Args:
        parts: Results of consecutive chunks (at least one).

    Returns:
        The result over the concatenated points (`parts[0]` when there is one).

    Raises:
        ValueError: if the parts ran different attacks or threat models.

    Example:

    ```python
    parts = [run_ensemble(model, x, y, attacks, 0.3) for x, y in chunks]
    result = merge_results(parts)
    ```
    """
    if not parts:
        raise ValueError("`parts` must hold at least one result. Received: parts=[]")
    first = parts[0]
    for part in parts[1:]:
        if [r.name for r in part.attacks] != [r.name for r in first.attacks] or (
            (part.eps, part.norm) != (first.eps, first.norm)
        ):
            raise ValueError(
                "Only results of the same attacks and threat model merge. Received attacks "
                f"{[r.name for r in first.attacks]} at eps={first.eps} ({first.norm}) and "
                f"{[r.name for r in part.attacks]} at eps={part.eps} ({part.norm})"
            )
    if len(parts) == 1:
        return first

    def joined(values: Sequence[Optional[np.ndarray]]) -> Optional[np.ndarray]:
        return None if values[0] is None else np.concatenate(values)

    n = sum(p.n for p in parts)
    attacks = []
    for index, head in enumerate(first.attacks):
        runs = [p.attacks[index] for p in parts]
        sizes = [p.n for p in parts]
        correct = joined([r.correct for r in runs])
        # A chunk where the attack had no point to attack has no values.
        keys = sorted({key for r in runs for key in r.extras})
        extras = {
            key: np.concatenate([r.extras.get(key, np.zeros(0)) for r in runs]) for key in keys
        }
        attacks.append(
            dataclasses.replace(
                head,
                config=runs[-1].config,
                n_attacked=sum(r.n_attacked for r in runs),
                n_broken=sum(r.n_broken for r in runs),
                accuracy=None if correct is None else float(correct.mean()),
                cumulative_accuracy=sum(
                    _count(r.cumulative_accuracy, m) for r, m in zip(runs, sizes)
                ) / n,
                chain_accuracy=None if head.chain is None else sum(
                    _count(r.chain_accuracy, m) for r, m in zip(runs, sizes)
                ) / n,
                seconds=sum(r.seconds for r in runs),
                correct=correct,
                survivors=joined([r.survivors for r in runs]),
                n_outside_ball=sum(r.n_outside_ball for r in runs),
                n_nonfinite=sum(r.n_nonfinite for r in runs),
                summary=_summarize(extras, first.eps),
                extras=extras,
            )
        )
    return EnsembleResult(
        labels=joined([p.labels for p in parts]),
        clean_pred=joined([p.clean_pred for p in parts]),
        clean_correct=joined([p.clean_correct for p in parts]),
        robust=joined([p.robust for p in parts]),
        adv_pred=joined([p.adv_pred for p in parts]),
        broken_by=joined([p.broken_by for p in parts]),
        attacks=attacks,
        eps=first.eps,
        norm=first.norm,
        chain_robust={
            chain: joined([p.chain_robust[chain] for p in parts]) for chain in first.chain_robust
        },
    )
