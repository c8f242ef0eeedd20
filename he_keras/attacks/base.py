"""What the attacks share: the `Attack` interface and helpers.

Argument checks, predictions with `training=False`, batch masks, the
projection onto the threat model, the output of minimal-norm attacks, and the
choice of target classes. The projected-gradient loop (step, random start)
lives in `he_keras.attacks.core`, whose `ProjectedGradientAttack` implements
`Attack` too.
"""

from __future__ import annotations

import abc
import numbers
from typing import Any, Callable

import tensorflow as tf


def require(condition: bool, name: str, value: Any, requirement: str) -> None:
    """Raises a ValueError naming `name` and its value unless `condition`.

    Args:
        condition: Whether the value is valid.
        name: Name of the argument.
        value: Its value (echoed in the message).
        requirement: What the argument must be, e.g. `"in (0, 1]"`.
    """
    if not condition:
        raise ValueError(f"`{name}` must be {requirement}. Received: {name}={value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validates an integer argument.

    Args:
        name: Name of the argument.
        value: Its value; integral floats such as `5.0` are accepted.
        minimum: Smallest valid value.

    Returns:
        `value` as an int.

    Raises:
        ValueError: If `value` is not an integer >= `minimum`.
    """
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    valid = valid and int(value) == value and int(value) >= minimum
    require(valid, name, value, f"an integer >= {minimum}")
    return int(value)


def per_example_l2(t: tf.Tensor) -> tf.Tensor:
    """L2 norm over all but the batch axis, shaped to broadcast against `t`."""
    axes = tf.range(1, tf.rank(t))
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True) + 1e-24)


def project(delta: tf.Tensor, eps: Any, norm: str) -> tf.Tensor:
    """Projects a perturbation onto the `norm` ball of radius `eps`.

    Args:
        delta: Perturbation, shape `(batch_size, ...)`.
        eps: Radius (scalar).
        norm: `"linf"` or `"l2"`.

    Returns:
        The projected perturbation, same shape as `delta`.
    """
    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    return delta * tf.minimum(1.0, eps / per_example_l2(delta))


def logits_of(model: Callable, x: tf.Tensor) -> tf.Tensor:
    """Logits of `model` in inference mode.

    Args:
        model: A model mapping inputs to logits.
        x: Inputs.

    Returns:
        Float32 logits, shape `(batch_size, classes)`.
    """
    return tf.cast(model(x, training=False), tf.float32)


def predict(model: Callable, x: tf.Tensor) -> tf.Tensor:
    """Predicted classes of `model` in inference mode.

    Args:
        model: A model mapping inputs to logits.
        x: Inputs.

    Returns:
        Int32 classes, shape `(batch_size,)`.
    """
    return tf.argmax(logits_of(model, x), axis=-1, output_type=tf.int32)


def batch_mask(mask: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Reshapes a per-example mask to broadcast against a batch.

    Args:
        mask: Per-example values, shape `(batch_size,)`.
        x: A batch of rank `r`.

    Returns:
        `mask` reshaped to `(batch_size, 1, ..., 1)` (rank `r`).
    """
    return tf.reshape(mask, [-1] + [1] * (len(x.shape) - 1))


def batch_spec(t: tf.Tensor) -> tf.TensorSpec:
    """A spec of `t` with an unknown batch size.

    Attacks that rerun on the subset of examples still robust trace their
    compiled loop once with it (`get_concrete_function`), so subsets of any
    size reuse that trace.

    Args:
        t: A batch.

    Returns:
        `tf.TensorSpec([None, *t.shape[1:]], t.dtype)`.
    """
    return tf.TensorSpec([None, *t.shape[1:]], t.dtype)


def perturbation_norm(delta: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example norm of a batch of perturbations.

    Args:
        delta: Perturbations, shape `(batch_size, ...)`.
        norm: `"linf"` or `"l2"`.

    Returns:
        Norms, shape `(batch_size,)`.
    """
    flat = tf.reshape(delta, [tf.shape(delta)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), axis=-1)
    return tf.norm(flat, axis=-1)


def minimal_norm_output(
    x: tf.Tensor, x_found: tf.Tensor, found: tf.Tensor, eps: float, norm: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """The output of a minimal-norm attack in the eps threat model.

    Args:
        x: Clean inputs.
        x_found: The adversarial points the attack found (any norm).
        found: Per-example flags of an adversarial point having been found.
        eps: Radius of the threat model.
        norm: `"linf"` or `"l2"`, the norm of the threat model.

    Returns:
        `(x_adv, norms)`: `x_found` projected onto the eps-ball ∩ [0, 1] (the
        clean input where nothing was found), and the per-example `norm` of
        the found perturbation (inf where nothing was found).
    """
    delta = x_found - x
    norms = tf.where(found, perturbation_norm(delta, norm), float("inf"))
    x_adv = tf.clip_by_value(x + project(delta, eps, norm), 0.0, 1.0)
    return tf.where(batch_mask(found, x), x_adv, x), norms


def ranked_class(logits: tf.Tensor, rank: int) -> tf.Tensor:
    """The class with the `rank`-th highest logit per example.

    Args:
        logits: Logits, shape `(batch_size, classes)`.
        rank: 1 for the top class, 2 for the runner-up, ...

    Returns:
        Int32 classes, shape `(batch_size,)`.
    """
    return tf.math.top_k(logits, k=rank).indices[:, rank - 1]


def check_target_classes(classes: int, n_target_classes: int, minimum: int) -> None:
    """Raises a ValueError if a targeted attack cannot run on `classes`.

    Args:
        classes: Number of classes of the model.
        n_target_classes: Targets requested (2nd..(n+1)-th highest logits).
        minimum: Fewest classes the attack's loss needs.

    Raises:
        ValueError: If there are too few classes.
    """
    if classes < minimum or n_target_classes > classes - 1:
        raise ValueError(
            f"A targeted attack with n_target_classes={n_target_classes} needs "
            f"at least {max(minimum, n_target_classes + 1)} classes; the model "
            f"has {classes}."
        )


class Attack(abc.ABC):
    """The interface every evaluation attack implements.

    An attack is built from its hyper-parameters (validated, and a `seed`
    where it draws noise), has a `name`, an `eps` and a `norm`, a JSON-ready
    `config()`, and is called as `attack(model, x, y) -> x_adv`. Subclasses
    implement `_attack` on float32 inputs and int32 labels; what an attack
    returns for the examples it does not break is stated in its class
    docstring.
    """

    name = "attack"

    def __call__(self, model: Callable, x: Any, y: Any) -> tf.Tensor:
        """Crafts adversarial examples.

        Args:
            model: A Keras model mapping [0, 1] inputs to logits; it is called
                with `training=False`.
            x: Clean inputs in [0, 1], shape `(batch_size, ...)`.
            y: Integer (true) labels, shape `(batch_size,)`.

        Returns:
            Float32 inputs of the shape of `x`, in the eps-ball around `x`
            intersected with [0, 1].
        """
        x = tf.convert_to_tensor(x, tf.float32)
        y = tf.cast(tf.convert_to_tensor(y), tf.int32)
        return self._attack(model, x, y)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict.

        Returns:
            `name`, `eps` and `norm`, to which subclasses add their settings.
        """
        return {"name": self.name, "eps": self.eps, "norm": self.norm}

    def _compile(self, loop: Callable) -> None:
        """Compiles an attack's loop as one `tf.function`, counting its traces.

        The compile policy of every attack that calls it: `_run_compiled`
        traces the loop once per input shape, with the batch dimension left
        unknown, so the subsets of still-robust points a chain hands the
        attack (a different number each call) reuse that one trace.
        `trace_count` says how often it was traced.

        Args:
            loop: `loop(model, *batches, *static) -> outputs`, written for a
                batch of unknown size.
        """
        self.trace_count = 0

        def counted(*args: Any) -> Any:
            self.trace_count += 1  # runs while tracing only
            return loop(*args)

        self._compiled = tf.function(counted)

    def _run_compiled(self, model: Callable, *batches: tf.Tensor, static: tuple = ()) -> Any:
        """Runs the loop of `_compile` on per-example `batches`.

        Args:
            model: The model under attack.
            *batches: Tensors whose first dimension is the batch.
            static: Python values the loop is traced for (one trace each).

        Returns:
            The loop's outputs.
        """
        self._compiled.get_concrete_function(model, *(batch_spec(b) for b in batches), *static)
        return self._compiled(model, *batches, *static)

    @abc.abstractmethod
    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Crafts adversarial examples from float32 `x` and int32 `y`."""
