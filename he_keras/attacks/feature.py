"""Feature attack: pull the penultimate features toward another class's image.

After Line290/FeatureAttack (used against Feature Scattering and
Adversarial Interpolation training): for each example pick images of other
classes as targets and run L-inf PGD (uniform random start) that maximizes
the cosine similarity between the penultimate features of `x_adv` and those
of the target image; the example is broken if any target's run flips its
label. The reference samples up to 500 targets per image with 50 steps each;
`n_targets` sets the budget here.

The penultimate features are the input of the model's last layer, read
through `keras.Model(model.inputs, model.layers[-1].input)`, so the model
must be a functional (or built Sequential) Keras model whose last layer
produces the logits. `feature_layer` names another layer whose output to use.
Each run is the compiled `core.ProjectedGradientAttack` on the feature model;
it returns the run's last iterate (the reference stops a run at the first
label flip; the label is checked here after the run).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import tensorflow as tf

from he_keras.attacks.adaptive import boundary_margin, keep_worst
from he_keras.attacks.base import Attack, check_int
from he_keras.attacks.core import (
    ProjectedGradientAttack,
    make_generator,
    validate_attack_params,
)


def cosine_similarity(y: tf.Tensor, features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Per-example cosine similarity of two feature batches (`y` unused)."""
    flat = tf.reshape(features, [tf.shape(features)[0], -1])
    flat_target = tf.reshape(target, [tf.shape(target)[0], -1])
    return tf.reduce_sum(
        tf.math.l2_normalize(flat, axis=-1) * tf.math.l2_normalize(flat_target, axis=-1),
        axis=-1,
    )


def penultimate_model(
    model: keras.Model, feature_layer: Optional[str] = None
) -> keras.Model:
    """A model from the inputs of `model` to its penultimate features.

    Args:
        model: A functional (or built Sequential) Keras model.
        feature_layer: Name of the layer whose output to use; default: the
            input of the last layer.

    Returns:
        A `keras.Model` sharing the weights of `model`.

    Example:

    ```python
    features = penultimate_model(model)(x)  # (batch_size, feature_dim)
    ```
    """
    if feature_layer is None:
        outputs = model.layers[-1].input
    else:
        outputs = model.get_layer(feature_layer).output
    return keras.Model(model.inputs, outputs)


class FeatureAttack(Attack):
    """L-inf PGD toward the penultimate features of other-class images.

    Returns per example the first run output that is misclassified, else the
    one closest to the boundary.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        step_size: PGD step size (reference: 1/255 at eps 8/255).
        steps: PGD steps per target (reference: 50).
        n_targets: Target images per example, distinct and of other classes.
        feature_layer: Optional name of the layer giving the features.
        target_pool: Optional `(images, labels)` to draw targets from;
            default: the attacked batch itself.
        seed: Seed of the target draw and the random starts.

    Example:

    ```python
    attack = FeatureAttack(eps=8 / 255, step_size=1 / 255, steps=50, n_targets=20, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    name = "feature"
    norm = "linf"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int = 50,
        n_targets: int = 20,
        feature_layer: Optional[str] = None,
        target_pool: Optional[tuple[Any, Any]] = None,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, step_size=step_size, steps=steps, norm="linf")
        self.n_targets = check_int("n_targets", n_targets)
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.feature_layer = feature_layer
        if target_pool is not None:
            images, labels = target_pool
            target_pool = (
                tf.convert_to_tensor(images, tf.float32),
                tf.cast(tf.convert_to_tensor(labels), tf.int32),
            )
        self.target_pool = target_pool
        self.seed = seed
        self.rng = make_generator(seed)
        self._pgd = ProjectedGradientAttack(
            eps=eps,
            step_size=step_size,
            steps=steps,
            random_start="uniform",
            objective=cosine_similarity,
            needs_reference=True,
            seed=None if seed is None else seed + 1,
        )
        self._features: tuple[Any, Optional[keras.Model]] = (None, None)

    @property
    def trace_count(self) -> int:
        """Traces of the compiled PGD loop."""
        return self._pgd.trace_count

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict (the pool by its size)."""
        pool_size = None if self.target_pool is None else int(self.target_pool[1].shape[0])
        return {
            **super().config(),
            "step_size": self.step_size,
            "steps": self.steps,
            "n_targets": self.n_targets,
            "feature_layer": self.feature_layer,
            "target_pool": pool_size,
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        features = self._feature_model(model)
        pool_x, pool_y = self.target_pool if self.target_pool is not None else (x, y)
        targets, valid = self._draw_targets(y, pool_y)
        x_best, margin_best = x, boundary_margin(model, x, y)
        for slot in range(targets.shape[1]):
            if bool(tf.reduce_all(margin_best > 0.0)):
                break
            reference = features(tf.gather(pool_x, targets[:, slot]), training=False)
            candidate = self._pgd(features, x, y, reference)
            x_best, margin_best = keep_worst(
                model, y, x_best, margin_best, candidate, valid[:, slot]
            )
        return x_best

    def _feature_model(self, model: keras.Model) -> keras.Model:
        source, features = self._features
        if source is not model:
            features = penultimate_model(model, self.feature_layer)
            self._features = (model, features)
        return features

    def _draw_targets(self, y: tf.Tensor, pool_y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Distinct random other-class pool indices per example, and validity."""
        k = min(self.n_targets, int(pool_y.shape[0]))
        scores = self.rng.uniform([tf.shape(y)[0], tf.shape(pool_y)[0]])
        other = tf.not_equal(pool_y[None, :], y[:, None])
        scores = tf.where(other, scores, -1.0)
        top = tf.math.top_k(scores, k=k)
        return top.indices, top.values >= 0.0
