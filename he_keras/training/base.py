"""The one `train_step` skeleton every adversarial-training framework shares.

`AdversarialTrainer` is a `keras.Model` that owns a classifier (composition)
and overrides `train_step` / `test_step`:

    x* = craft(x, y)                      # the framework's inner maximization
    loss = mean(objective(x, x*, y))      # the framework's outer objective
    optimizer.apply(grad(loss))
    metrics: loss, clean_accuracy (unless turned off), adv_accuracy

A framework is a short subclass that overrides `objective` (and, if its
attack is not the default PGD on cross-entropy, `attack_objective` or
`craft`). The classification loss is chosen by the classifier's head: plain
cross-entropy for a linear head, the HE margin loss `CE(s*(g(theta) - m*1_y))`
for an HE or m-HE head (`he_keras.losses.margin_cross_entropy`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import keras
import tensorflow as tf

from he_keras import losses
from he_keras.attacks.core import ProjectedGradientAttack, validate_attack_params
from he_keras.defaults import EVAL_PGD_STEPS, NATURAL_IMAGE_EPS, margin_of, pgd_step_size
from he_keras.models.heads import find_head, head_kind
from he_keras.validation import validate_images, validate_labels


class AdversarialTrainer(keras.Model):
    """Base class of the adversarial-training frameworks.

    Args:
        classifier: A Keras model mapping [0, 1] images to logits (any head).
        eps: L-inf (or L2) radius of the training attack, in pixel units.
        step_size: Step size of the training attack (None: the framework's
            own; PGD's is `he_keras.defaults.pgd_step_size(eps, steps)`).
        steps: Steps of the training attack.
        norm: `"linf"` or `"l2"`.
        random_start: Start of the training attack: `"zero"`, `"uniform"` or
            `"normal"` (x + 0.001 N(0, 1)).
        attack_training: Whether BN runs in training mode while crafting
            (None: the framework's own, `default_attack_training`; False, as
            TRADES and the HE reference code do, except FastAT).
        margin: HE margin `m`. None picks the paper's default for the head
            (0 linear, 0.2 HE, 0.1 m-HE). Must be 0 for a linear head.
        eval_steps: Steps of the PGD run by `evaluate()` / validation.
        eval_step_size: Its step size (None: `pgd_step_size(eps, eval_steps)`).
        seed: Seed of the attacks' random streams (None: non-deterministic).
        clean_accuracy: Whether `fit` logs `clean_accuracy`. A framework
            whose objective has no clean forward pass (PGD-AT, FastAT,
            FreeAT) then runs one more forward pass per step, after the
            update, only for this metric (a steady quickstart epoch of
            PGD-AT took 7 % less without it in one of two runs, the
            README's "Time to a robust model"); False skips it and leaves
            the metric out of the logs (so `train_on_batch(...,
            return_dict=False)` returns one value fewer). TRADES, ALP,
            HAT and `Standard` compute it from their own clean pass either
            way, and validation always logs `val_clean_accuracy`.
        **kwargs: `keras.Model` keyword arguments (`name`).

    Example:

    ```python
    classifier = keras.Sequential([..., HypersphereDense(10, s=15)])
    trainer = PGDAT(classifier, eps=0.3, step_size=0.03, steps=10)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    trainer.fit(x, y, epochs=5)      # logs loss, clean_accuracy, adv_accuracy
    ```
    """

    attack_objective_name = "ce"
    default_random_start = "uniform"
    default_attack_training = False
    # Names of the `TrainConfig.framework_params` the framework accepts.
    hyperparameters: tuple = ()

    def __init__(
        self,
        classifier: keras.Model,
        eps: float = NATURAL_IMAGE_EPS,
        step_size: Optional[float] = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: Optional[str] = None,
        attack_training: Optional[bool] = None,
        margin: Optional[float] = None,
        eval_steps: int = EVAL_PGD_STEPS,
        eval_step_size: Optional[float] = None,
        seed: Optional[int] = None,
        clean_accuracy: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(classifier, keras.Model):
            raise ValueError(
                "`classifier` must be a keras.Model. "
                f"Received: classifier={type(classifier).__name__}"
            )
        validate_attack_params(eps=eps, steps=steps, norm=norm)
        validate_attack_params(steps=eval_steps)
        if step_size is None:
            step_size = pgd_step_size(eps, steps)
        validate_attack_params(step_size=step_size)
        self.classifier = classifier
        self.head_kind = head_kind(classifier)
        margin = margin_of(self.head_kind, margin)
        if eval_step_size is None:
            eval_step_size = pgd_step_size(eps, eval_steps)
        validate_attack_params(step_size=eval_step_size)
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.norm = norm
        self.random_start = random_start or self.default_random_start
        self.attack_training = bool(
            self.default_attack_training if attack_training is None else attack_training
        )
        self.margin = float(margin)
        self.eval_steps = int(eval_steps)
        self.eval_step_size = float(eval_step_size)
        self.seed = seed
        self.logs_clean_accuracy = bool(clean_accuracy)
        self.attack = ProjectedGradientAttack(
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            objective=self.attack_objective,
            training=self.attack_training,
            needs_reference=self.attack_objective_name == "kl",
            seed=seed,
            # Kept out of the checkpoint: `EpsilonWarmup` sets it every batch.
            budget_scale=tf.Variable(1.0, trainable=False, name="attack_budget_scale"),
        )
        self.eval_attack = ProjectedGradientAttack(
            eps=self.eps,
            step_size=self.eval_step_size,
            steps=self.eval_steps,
            norm=self.norm,
            random_start="uniform",
            objective="ce",
            seed=None if seed is None else seed + 1,
        )
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="clean_accuracy"
        )
        self.adv_accuracy = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")

    # === Hooks a framework overrides ===

    def attack_objective(self, y: tf.Tensor, logits: tf.Tensor, reference: Any) -> tf.Tensor:
        """Per-example loss the training attack maximizes (default: CE on logits)."""
        return losses.get_objective(self.attack_objective_name)(y, logits, reference)

    def craft(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """The inner maximization: adversarial examples for a training batch."""
        return self.attack(self.classifier, x, y)

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        """The outer objective, run under the gradient tape.

        Args:
            x: Clean batch.
            x_adv: Adversarial batch from `craft`.
            y: Integer labels.

        Returns:
            `(per_example_loss, clean_logits or None, adv_logits)`; clean
            logits are computed for the metrics when None.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement objective(x, x_adv, y)"
        )

    @classmethod
    def prerequisites(cls, config: Any) -> dict:
        """Models this framework needs trained before its own run.

        The run layer (`he_keras.runs.run`) trains each prerequisite run
        whose `model.keras` does not exist yet, before building the trainer,
        and passes its model path as the named framework parameter. HAT
        declares its standard helper model here; the default needs nothing.

        Args:
            config: The validated `TrainConfig` of the run.

        Returns:
            `{framework parameter: TrainConfig overrides of the run that
            trains its model}`.
        """
        return {}

    def checkpoint_state(self) -> dict:
        """Training state outside `variables` that a checkpoint must hold.

        Returns:
            Named trackables (variables) for `tf.train.Checkpoint`; none by
            default (FreeAT: its perturbation buffer).
        """
        return {}

    def set_attack_budget(self, fraction: float) -> None:
        """Scales the training attack's eps and step size by `fraction`.

        The validation attack keeps the full eps. `EpsilonWarmup` calls this
        before every batch.

        Args:
            fraction: Share of `eps` (and of the step size) in [0, 1].
        """
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"`fraction` must be in [0, 1]. Received: fraction={fraction!r}")
        self.attack.budget_scale.assign(float(fraction))

    @contextlib.contextmanager
    def keeping_attack_budget(self) -> Iterator[None]:
        """Restores the training attack's budget on leaving, also on an exception.

        Training loops run inside it, so that a warm-up (`EpsilonWarmup`)
        never outlives the training it ran in.
        """
        budget = self.attack_budget
        try:
            yield
        finally:
            self.set_attack_budget(budget)

    @property
    def attack_budget(self) -> float:
        """The current share of `eps` the training attack uses (1 unless warming up)."""
        return float(self.attack.budget_scale.numpy())

    @property
    def updates_per_batch(self) -> int:
        """Optimizer updates per training batch (1; FreeAT: its replays)."""
        return 1

    # === Shared pieces ===

    @staticmethod
    def unpack(data: Any) -> tuple:
        """`(x, int32 labels of shape (batch,), sample_weight)` of a batch."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return x, tf.cast(tf.reshape(y, [-1]), tf.int32), sample_weight

    def classification_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-example CE, with the HE margin `s*m` for HE / m-HE heads."""
        if self.head_kind == "linear" or self.margin == 0:
            return losses.cross_entropy(y, logits)
        head = find_head(self.classifier)
        return losses.margin_cross_entropy(y, logits, head.scale * self.margin)

    def unscaled_logits(self, logits: tf.Tensor) -> tf.Tensor:
        """Logits divided by the HE scale (raw `cos(theta)` or `-theta`)."""
        if self.head_kind == "linear":
            return logits
        return tf.cast(logits, tf.float32) / find_head(self.classifier).scale

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.classifier(inputs, training=training)

    def compile(self, optimizer: Any = "sgd", **kwargs: Any) -> None:
        """Configures the optimizer. The loss comes from the framework.

        Args:
            optimizer: A Keras optimizer or its name.
            **kwargs: Other `keras.Model.compile` arguments except `loss`.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"{type(self).__name__} defines its own loss; do not pass `loss` to compile()."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, after checking array inputs.

        NumPy / tensor images must be finite, in [0, 1] and of the
        classifier's input shape, and labels in `[0, classes)`; a bad batch
        raises ValueError before any training step. (Datasets are checked by
        `he_keras.runs.run` for the apps.) The training attack's budget
        is restored to its value before the call, also when `fit` raises, so a
        warm-up (`EpsilonWarmup`) never outlives the fit it ran in.
        """
        if x is not None and not isinstance(x, (tf.data.Dataset, dict)) and hasattr(x, "shape"):
            validate_images(x, self.classifier.input_shape[1:])
            if y is not None:
                validate_labels(y, self.classifier.output_shape[-1], len(x))
        with self.keeping_attack_budget():
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, with the same attack random start every call.

        With a `seed`, the validation attack's generator is reset before each
        evaluation (`fit` validates through this method after every epoch),
        so the per-epoch `val_adv_accuracy` of an unchanged model is the same
        number: epoch-to-epoch changes measure the model, not the attack's
        random start (common random numbers). Without a seed the starts stay
        non-deterministic.
        """
        if self.seed is not None:
            self.eval_attack.rng.reset_from_seed(self.seed + 1)
        return super().evaluate(*args, **kwargs)

    def reduce_loss(self, per_example: tf.Tensor, sample_weight: Any = None) -> tf.Tensor:
        """Mean over the global batch plus regularization, per replica."""
        loss = tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
        if self.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        return loss

    def apply_gradients(
        self, tape: tf.GradientTape, loss: tf.Tensor, sources: tuple = ()
    ) -> list:
        """Computes gradients of a (per-replica) loss and applies them.

        Args:
            tape: The tape the loss was recorded on.
            loss: The (scaled) per-replica loss.
            sources: Further tensors watched by the tape whose gradients are
                wanted from the same backward pass (FreeAT's perturbation).

        Returns:
            The gradients with respect to `sources`.
        """
        variables = self.trainable_variables
        grads = tape.gradient(loss, [*sources, *variables])
        self.optimizer.apply(grads[len(sources):], variables)
        return grads[: len(sources)]

    def update_metrics(
        self,
        loss: tf.Tensor,
        y: tf.Tensor,
        clean_logits: Optional[tf.Tensor],
        adv_logits: tf.Tensor,
        sample_weight: Any = None,
    ) -> dict:
        """Updates loss / clean / adversarial accuracy and returns the results.

        Clean logits of None (`clean_accuracy=False` during training) leave
        `clean_accuracy` out of the results instead of logging a stale value.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # An empty batch (Keras runs one past the end of a dataset of unknown
        # size) must not count as a batch of loss 0 in the mean.
        nonempty = tf.cast(tf.size(y) > 0, tf.float32)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=nonempty)
        if clean_logits is not None:
            self.clean_accuracy.update_state(y, clean_logits, sample_weight)
        self.adv_accuracy.update_state(y, adv_logits, sample_weight)
        return {
            m.name: m.result()
            for m in self.metrics
            if clean_logits is not None or m is not self.clean_accuracy
        }

    def clean_logits_for_metrics(self, x: tf.Tensor) -> Optional[tf.Tensor]:
        """The extra clean forward pass of a training step, if the metric wants it.

        Args:
            x: The clean batch.

        Returns:
            Inference-mode logits of `x` for `clean_accuracy`, or None when
            the trainer does not log it (`clean_accuracy=False`).
        """
        return self.classifier(x, training=False) if self.logs_clean_accuracy else None

    def train_step(self, data: Any) -> dict:
        x, y, sample_weight = self.unpack(data)
        x_adv = tf.stop_gradient(self.craft(x, y))
        with tf.GradientTape() as tape:
            per_example, clean_logits, adv_logits = self.objective(x, x_adv, y)
            loss = self.reduce_loss(per_example, sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        self.apply_gradients(tape, scaled)
        if clean_logits is None:
            clean_logits = self.clean_logits_for_metrics(x)
        return self.update_metrics(loss, y, clean_logits, adv_logits, sample_weight)

    def test_step(self, data: Any) -> dict:
        x, y, sample_weight = self.unpack(data)
        x_adv = self.eval_attack(self.classifier, x, y)
        clean_logits = self.classifier(x, training=False)
        adv_logits = self.classifier(x_adv, training=False)
        loss = self.reduce_loss(self.classification_loss(y, adv_logits), sample_weight)
        return self.update_metrics(loss, y, clean_logits, adv_logits, sample_weight)

    # === Config ===

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "norm": self.norm,
            "random_start": self.random_start,
            "attack_training": self.attack_training,
            "margin": self.margin,
            "eval_steps": self.eval_steps,
            "eval_step_size": self.eval_step_size,
            "seed": self.seed,
            "clean_accuracy": self.logs_clean_accuracy,
        }

    @classmethod
    def from_config(cls, config: dict) -> "AdversarialTrainer":
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)

