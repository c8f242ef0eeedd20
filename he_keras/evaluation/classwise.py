"""Class-wise robustness (Tian et al., "Analysis and applications of class-wise
robustness in adversarial training", arXiv 2105.14240, the project's seed 003).

- per-class clean and robust accuracy, per attack and for the worst case;
- the robustness confusion matrix: true class x class predicted on the
  worst-case input x* (the diagonal holds the robust points);
- per-class norms of the classifier weights (the last layer's kernel columns;
  for HE heads the unnormalized kernel) and their Spearman correlation with
  per-class robustness;
- per-class mean variance of the predicted probability vector (their Fig. 5:
  a flatter output distribution, i.e. lower variance, goes with vulnerable
  classes and with defenses that vanilla PGD overestimates).
"""

from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np
from scipy import stats

from he_keras.evaluation.ensemble import EnsembleResult
# The head module's recursive layer walk (nested models included).
from he_keras.models.heads import walk_layers


def per_class_accuracy(
    labels: np.ndarray, correct: np.ndarray, num_classes: int
) -> dict:
    """Per-class counts and accuracy of per-point correctness flags.

    Args:
        labels: True labels `(n,)`.
        correct: Boolean flags `(n,)`.
        num_classes: Number of classes.

    Returns:
        `{"n": [...], "correct": [...], "accuracy": [...]}` (accuracy None for
        classes without examples); the counts sum to the totals.
    """
    n = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=num_classes)
    return {
        "n": n.astype(int).tolist(),
        "correct": hits.astype(int).tolist(),
        "accuracy": [float(h / c) if c else None for h, c in zip(hits, n)],
    }


def robustness_confusion_matrix(
    labels: np.ndarray, adv_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    """Counts of (true class, class predicted on x*), shape `(C, C)`.

    Rows sum to the per-class example counts; the diagonal holds the points
    still classified correctly under the worst case.
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, adv_pred), 1)
    return matrix


def classifier_weight_norms(model: Any, num_classes: int) -> Optional[np.ndarray]:
    """L2 norms of the last layer's kernel columns, one per class.

    The last layer (nested models included) holding a 2-D kernel with
    `num_classes` columns is the classifier. For an HE / m-HE head this is
    its unnormalized kernel (the head normalizes it in its forward pass).

    Args:
        model: A Keras model (other callables have no kernel to read).
        num_classes: Number of classes.

    Returns:
        Norms of shape `(num_classes,)`, or None if the model exposes no such
        kernel (e.g. a wrapped SavedModel).
    """
    kernel = None
    for layer in walk_layers(model):
        weights = getattr(layer, "kernel", None)
        if weights is not None and tuple(weights.shape)[1:] == (num_classes,):
            kernel = weights
    if kernel is None:
        return None
    return np.linalg.norm(np.asarray(kernel), axis=0)


def probability_variance(
    logits: np.ndarray, labels: np.ndarray, num_classes: int
) -> list:
    """Per true class, the mean over its examples of Var_j softmax(z)_j."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    var = p.var(axis=1)
    sums = np.bincount(labels, weights=var, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def spearman(a: np.ndarray, b: np.ndarray) -> Optional[dict]:
    """Spearman rank correlation of two vectors (None if undefined)."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return None
    result = stats.spearmanr(a[keep], b[keep])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue)}


def classwise_report(
    result: EnsembleResult,
    clean_logits: np.ndarray,
    num_classes: int,
    model: Optional[keras.Model] = None,
) -> dict:
    """Everything class-wise about one ensemble run.

    Args:
        result: The ensemble result.
        clean_logits: Clean logits of the evaluated points `(n, C)`.
        num_classes: Number of classes.
        model: The model, to read its classifier weights (optional).

    Returns:
        A JSON-ready dict with `clean`, `worst_case`, per-attack
        (`attacks`, standalone attacks only), `confusion_matrix`,
        `probability_variance`, `weight_norms` and
        `weight_norm_vs_robustness` (Spearman rho and p-value against the
        worst-case and each attack's per-class accuracy; None where a side
        is constant).
    """
    labels = result.labels
    worst = per_class_accuracy(labels, result.robust, num_classes)
    out = {
        "classes": list(range(num_classes)),
        "clean": per_class_accuracy(labels, result.clean_correct, num_classes),
        "worst_case": worst,
        "attacks": {
            r.name: per_class_accuracy(labels, r.correct, num_classes)
            for r in result.attacks
            if r.correct is not None
        },
        "confusion_matrix": robustness_confusion_matrix(
            labels, result.adv_pred, num_classes
        ).tolist(),
        "probability_variance": probability_variance(clean_logits, labels, num_classes),
        "weight_norms": None,
        "weight_norm_vs_robustness": None,
    }
    norms = None if model is None else classifier_weight_norms(model, num_classes)
    if norms is not None:
        out["weight_norms"] = norms.tolist()
        rows = {"worst_case": worst, **out["attacks"]}
        out["weight_norm_vs_robustness"] = {
            name: spearman(norms, np.array([np.nan if a is None else a for a in row["accuracy"]]))
            for name, row in rows.items()
        }
    return out
