"""Margin along directions, common corruptions (mocked tfds) and report files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from he_keras.evaluation import corruption_selection, corruptions, margin
from he_keras.evaluation.report import write_report


class LinearTwoClass:
    """Logits `[w.x - b, 0]`: class 0 iff `w.x > b`."""

    def __init__(self, w, b):
        self.w = tf.constant(w.reshape(-1), tf.float32)
        self.b = b

    def __call__(self, x, training=False):
        z = tf.linalg.matvec(tf.reshape(tf.cast(x, tf.float32), [len(x), -1]), self.w) - self.b
        return tf.stack([z, tf.zeros_like(z)], axis=1)


def test_margin_matches_the_analytic_distance_to_a_linear_boundary():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4, 1))
    model = LinearTwoClass(w, b=0.0)
    x = rng.uniform(size=(6, 4, 4, 1)).astype(np.float32)
    x *= np.sign((x * w).sum(axis=(1, 2, 3)))[:, None, None, None]  # w.x > 0: class 0
    unit_w = w / np.linalg.norm(w)
    directions = np.repeat(-unit_w[None], 6, axis=0).astype(np.float32)
    distance = (x * w).sum(axis=(1, 2, 3)) / np.linalg.norm(w)
    found = margin.margins_along(model, x, directions, cap=35, precision=0.1)
    # The search reports the first grid point past the boundary.
    assert np.all(found >= distance - 1e-4) and np.all(found <= distance + 0.1 + 1e-4)
    # Along directions orthogonal to w the prediction never changes: capped.
    ortho = margin.orthogonal_directions(directions, seed=3)
    assert np.allclose((ortho.reshape(6, -1) * directions.reshape(6, -1)).sum(1), 0, atol=1e-5)
    assert np.allclose(np.linalg.norm(ortho.reshape(6, -1), axis=1), 1, atol=1e-5)
    capped = margin.margins_along(model, x, ortho, cap=5, precision=0.5)
    assert np.all(capped == 5)
    stats = margin.margin_statistics(found, 35)
    assert stats["p10"] <= stats["p50"] <= stats["p90"] and stats["n_capped"] == 0


def test_margin_report_uses_the_reference_pgd_direction():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 4, 1))
    model = LinearTwoClass(w, b=0.0)
    x = rng.uniform(size=(8, 4, 4, 1)).astype(np.float32)
    directions = margin.adversarial_directions(model, x, eps=0.1, seed=0)
    norms = np.linalg.norm(directions.reshape(8, -1), axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    report = margin.margin_report(model, model, x, eps=0.1, seed=0)
    # The linear model's PGD direction points at its boundary: smaller margin than the control.
    assert report["adversarial"]["median"] < report["orthogonal"]["median"]
    assert report["settings"]["cap"] == 35


def tiny_cifar_model():
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(pooled))


def test_corruption_accuracy_with_mocked_tfds():
    model = tiny_cifar_model()
    with tfds.testing.mock_data(num_examples=12):
        result = corruptions.corruption_accuracy(
            model, "cifar10", n_examples=5, corruptions=["fog", "elastic"], severities=[1, 5],
            batch_size=4,
        )
    assert set(result["accuracy"]) == {"fog", "elastic"}
    assert set(result["accuracy"]["fog"]) == {"1", "5"}
    assert result["n_per_config"] == [5]
    values = [v for c in result["accuracy"].values() for v in c.values()]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert result["mCA"] == pytest.approx(np.mean(values))
    assert corruption_selection.corrupted_version("cifar10") == "cifar10_corrupted"
    assert corruption_selection.corrupted_version("digits") is None
    with pytest.raises(ValueError, match="frosted_glass"):
        corruptions.corruption_accuracy(model, "cifar10", 5, corruptions=["glass_blur"])


def minimal_report():
    attack = {
        "name": "PGD-20", "kind": "white-box", "config": {"steps": 20}, "n_attacked": 3,
        "n_broken": 1, "accuracy": 0.5, "cumulative_accuracy": 0.5, "chain": None,
        "chain_accuracy": None, "seconds": 0.1,
        "n_outside_ball": 0, "n_nonfinite": 0, "summary": {},
    }
    return {
        "settings": {"model": "m", "dataset": "digits", "n": 4, "eps": 0.3, "norm": "linf",
                     "suite": "quick", "seed": 0},
        "clean_accuracy": 0.75, "robust_accuracy": 0.5, "attacks": [attack],
        "curves": {"accuracy_vs_steps": {"attack": {"steps": "1..2"},
                                         "points": [{"steps": 1, "accuracy": 0.6},
                                                    {"steps": 2, "accuracy": 0.5}]}},
        "headline": {},
        "checks": [{"name": "zero_gradients", "status": "flagged", "flagged": True, "message": "m",
                    "evidence": {}}],
        "seconds": 1.0,
    }


def test_write_report_is_atomic_and_refuses_a_file(tmp_path):
    paths = write_report(minimal_report(), str(tmp_path / "out"))
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["accuracy_vs_steps.png", "report.json", "report.md"]
    assert len(paths) == 3
    assert json.loads((tmp_path / "out" / "report.json").read_text())["robust_accuracy"] == 0.5
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| m | 75.00 | 50.00 | **50.00** |" in text and "**FLAG** `zero_gradients`" in text
    bad = minimal_report()
    bad["robust_accuracy"] = float("nan")
    with pytest.raises(ValueError):
        write_report(bad, str(tmp_path / "out"))
    # The failed write left the previous report and no temporary file.
    assert sorted(os.listdir(tmp_path / "out")) == names
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        write_report(minimal_report(), str(tmp_path / "file"))
