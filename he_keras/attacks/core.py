"""The one projected-gradient attack core every gradient attack builds on.

A single `tf.function`-compiled loop: random start, gradient of a per-example
objective with respect to the input only, a step (sign for L-inf, normalized
gradient for L2), projection onto the eps-ball around the clean input, and a
clip to the image box [0, 1]. FGSM, PGD, TRADES-KL PGD, CW-margin PGD,
Temperature-PGD and HE-adaptive PGD are instances that differ only in the
objective (see `he_keras.losses.get_objective`).

The budget (eps, step size, steps) enters the compiled loop as tensors and
the batch axis is left unknown, so an attack traces once per input shape:
batches of any size, the still-robust subsets of an ensemble and the points
of a curve (`with_budget`) all reuse that trace.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import keras
import tensorflow as tf

from he_keras import losses
from he_keras.attacks.base import Attack, batch_spec, per_example_l2, project

NORMS = ("linf", "l2")
RANDOM_STARTS = ("zero", "uniform", "normal")
# Standard deviation of the "normal" start: x + 0.001 * N(0, 1) (TRADES, AT_HE).
NORMAL_START_STDDEV = 1e-3


def ascent_direction(grad: tf.Tensor, norm: str) -> tf.Tensor:
    """Steepest-ascent direction of unit `norm`: sign(g) or g / ||g||_2."""
    if norm == "linf":
        return tf.sign(grad)
    return grad / per_example_l2(grad)


def random_start(
    rng: tf.random.Generator, x: tf.Tensor, eps: Any, norm: str, kind: str
) -> tf.Tensor:
    """Draws a starting point of the attack, clipped to [0, 1].

    Args:
        rng: The generator the noise comes from.
        x: Clean inputs in [0, 1].
        eps: Radius of the ball.
        norm: `"linf"` or `"l2"`.
        kind: `"zero"` (x itself), `"uniform"` (uniform in the eps-ball) or
            `"normal"` (`x + 0.001 * N(0, 1)`, as TRADES and AT_HE start).

    Returns:
        The starting point, same shape as `x`.
    """
    if kind == "zero":
        return x
    if kind == "normal":
        delta = NORMAL_START_STDDEV * rng.normal(tf.shape(x))
    elif norm == "linf":
        delta = rng.uniform(tf.shape(x), -1.0, 1.0) * eps
    else:
        direction = rng.normal(tf.shape(x))
        direction = direction / per_example_l2(direction)
        dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        radius = rng.uniform(tf.concat([tf.shape(x)[:1], tf.ones_like(tf.shape(x)[1:])], 0))
        delta = direction * eps * tf.pow(radius, 1.0 / dims)
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def graph_ready(fn: Callable) -> Callable:
    """`fn`, made callable inside the attack loop, which AutoGraph does not convert.

    he-keras', Keras' and TensorFlow's own code (and every Keras layer or
    model) is written for graphs and is called as it is: converting the loop
    and all it calls took over half of a training run's first trace. Any
    other callable (a user's model function or objective) runs as a nested
    `tf.function` with AutoGraph, as it ran inside the attack before, so
    Python `if` or `len()` on tensors keep working there.

    Args:
        fn: A model or objective callable.

    Returns:
        `fn` itself, or `fn` wrapped in a `tf.function`.
    """
    module = getattr(fn, "__module__", None) or type(fn).__module__
    if isinstance(fn, keras.layers.Layer) or module.split(".")[0] in ("he_keras", "keras", "tensorflow"):
        return fn
    return tf.function(fn)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process.

    TensorFlow's own choice for the CPU, or `TF_ENABLE_ONEDNN_OPTS`; True
    if this TensorFlow does not say.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


def loop_step(fn: Callable) -> Callable:
    """`fn` as a function of its own, for the body of a graph loop.

    TensorFlow lowers a `tf.while_loop` into one cyclic graph. oneDNN's
    layout pass visits that graph in an order that can put a gradient op
    before its forward op, and a max-pooling gradient whose forward was not
    yet rewritten stays on the plain kernel: with the HE head, the
    quickstart net's PGD loop spent about 1 ms per iteration there against
    0.15 ms for oneDNN's, in 4 of 12 traces (the README's "Time to a
    robust model"). A function the optimizer does not inline is an
    acyclic graph of its own, rewritten forward first. Without oneDNN there
    is no layout pass and `fn` is returned as it is, so the graph and the
    round-off of training stay those the study's units were recorded with.
    `fn` is traced without AutoGraph: pass it callables made `graph_ready`.

    Args:
        fn: The loop's forward and gradient computation.

    Returns:
        `fn` as a `tf.function` that is called, not inlined (with oneDNN).

    Example:

    >>> step = loop_step(lambda x: 2.0 * x)
    >>> float(step(tf.constant(1.0)))
    2.0
    """
    if not onednn_enabled():
        return fn
    return tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})


def make_generator(seed: Optional[int]) -> tf.random.Generator:
    """A `tf.random.Generator` from `seed` (non-deterministic when None).

    Create it inside `strategy.scope()` to get one reproducible stream per
    replica under `tf.distribute`.
    """
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(int(seed))


class ProjectedGradientAttack(Attack):
    """Projected gradient ascent on a per-example objective, compiled once.

    Args:
        eps: Radius of the threat model in pixel units ([0, 1] images).
        step_size: Step size (for L-inf, the size of each sign step).
        steps: Number of gradient steps (1 with `step_size=eps` and a zero
            start is FGSM).
        norm: `"linf"` or `"l2"`.
        random_start: `"zero"`, `"uniform"` or `"normal"`.
        objective: An objective name for `he_keras.losses.get_objective`, or a
            callable `(y, logits, reference_logits) -> per-example loss`.
        objective_params: Keyword parameters for a named objective.
        training: Whether the model runs in training mode (BN batch
            statistics) while crafting. Default False, as the reference TRADES
            and HE code craft.
        targeted: If True, `y` holds target classes and the objective is
            minimized.
        needs_reference: Whether the objective uses the clean logits (True for
            `"kl"`); they are computed once, in the crafting mode, without
            gradient.
        keep_best: If True, return per example the first misclassified
            iterate, or the highest-loss one if none is (evaluation mode). If
            False return the last iterate (training mode).
        seed: Seed of the random start (None: non-deterministic).
        name: Name in `config()` (`"pgd"`; `fgsm` names its attack `"fgsm"`).
        budget_scale: Optional scalar `tf.Variable` read at every call; eps
            and step size are multiplied by its value (the training attack's
            eps warm-up, `he_keras.training.EpsilonWarmup`). None: 1.

    Example:

    ```python
    pgd = ProjectedGradientAttack(eps=0.3, step_size=0.03, steps=20)
    x_adv = pgd(model, x, y)
    pgd.config()  # {"name": "pgd", "eps": 0.3, "norm": "linf", "steps": 20, ...}
    ```
    """

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        norm: str = "linf",
        random_start: str = "uniform",
        objective: Union[str, Callable] = "ce",
        objective_params: Optional[dict] = None,
        training: bool = False,
        targeted: bool = False,
        needs_reference: Optional[bool] = None,
        keep_best: bool = False,
        seed: Optional[int] = None,
        name: str = "pgd",
        budget_scale: Optional[tf.Variable] = None,
    ) -> None:
        validate_attack_params(eps=eps, step_size=step_size, steps=steps, norm=norm)
        if random_start not in RANDOM_STARTS:
            raise ValueError(
                f"`random_start` must be one of {RANDOM_STARTS}. "
                f"Received: random_start={random_start!r}"
            )
        self.name = name
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.norm = norm
        self.random_start = random_start
        self.objective_params = dict(objective_params or {})
        if callable(objective):
            self.objective = objective
            self.objective_name = getattr(objective, "__name__", "custom")
        else:
            self.objective = losses.get_objective(objective, **self.objective_params)
            self.objective_name = objective
        if needs_reference is None:
            needs_reference = objective == "kl"
        self.needs_reference = bool(needs_reference)
        self.training = bool(training)
        self.targeted = bool(targeted)
        self.keep_best = bool(keep_best)
        self.seed = seed
        self.rng = make_generator(seed)
        self.budget_scale = budget_scale
        self._traces = [0]  # Shared with the `with_budget` copies.
        self._compiled = tf.function(self._perturb, autograph=False)

    @property
    def trace_count(self) -> int:
        """How often the compiled loop was traced (once per input shape)."""
        return self._traces[0]

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "objective": self.objective_name,
            "objective_params": dict(self.objective_params),
            "targeted": self.targeted,
            "keep_best": self.keep_best,
            "training": self.training,
            "seed": self.seed,
        }

    def with_budget(
        self,
        eps: Optional[float] = None,
        step_size: Optional[float] = None,
        steps: Optional[int] = None,
    ) -> "ProjectedGradientAttack":
        """The same attack with another budget, sharing this one's trace.

        The copy shares the compiled loop (so it adds no trace) and the random
        generator (`rng`) of this attack.

        Args:
            eps: New radius (default: unchanged).
            step_size: New step size (default: unchanged).
            steps: New number of steps (default: unchanged).

        Returns:
            A `ProjectedGradientAttack` whose `config()` states its budget.

        Example:

        ```python
        pgd = ProjectedGradientAttack(eps=0.3, step_size=0.075, steps=20, seed=0)
        curve = [pgd.with_budget(steps=k) for k in (1, 10, 100)]
        ```
        """
        validate_attack_params(eps=eps, step_size=step_size, steps=steps, norm=self.norm)
        attack = copy.copy(self)
        if eps is not None:
            attack.eps = float(eps)
        if step_size is not None:
            attack.step_size = float(step_size)
        if steps is not None:
            attack.steps = int(steps)
        return attack

    def __call__(
        self,
        model: Callable,
        x: Any,
        y: Any,
        reference: Optional[tf.Tensor] = None,
    ) -> tf.Tensor:
        """Crafts adversarial examples.

        Args:
            model: Callable `model(x, training=...) -> logits` (a Keras model).
            x: Clean inputs in [0, 1], float.
            y: Integer labels (targets if `targeted`).
            reference: Optional clean logits for objectives that use them;
                computed from `model` when needed and not given.

        Returns:
            Adversarial inputs, same shape as `x`, float32.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        y = tf.cast(tf.convert_to_tensor(y), tf.int32)
        return self._run(model, x, y, reference)

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self._run(model, x, y, None)

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor, reference: Optional[tf.Tensor]
    ) -> tf.Tensor:
        has_reference = reference is not None
        reference = tf.zeros([0]) if reference is None else tf.cast(reference, tf.float32)
        eps = tf.constant(self.eps, tf.float32)
        step_size = tf.constant(self.step_size, tf.float32)
        if self.budget_scale is not None:
            scale = tf.cast(self.budget_scale, tf.float32)
            eps, step_size = eps * scale, step_size * scale
        budget = (eps, step_size, tf.constant(self.steps, tf.int32))
        if tf.executing_eagerly():
            # One trace per input shape, whatever the batch size or budget. A
            # reference is per-example (clean logits) or a scalar (a scale).
            scalar = (tf.TensorSpec([], tf.float32),) * 2 + (tf.TensorSpec([], tf.int32),)
            reference_spec = (
                batch_spec(reference) if has_reference and reference.shape.rank
                else tf.TensorSpec.from_tensor(reference)
            )
            self._compiled.get_concrete_function(
                model, batch_spec(x), batch_spec(y), reference_spec, has_reference, *scalar
            )
        return self._compiled(model, x, y, reference, has_reference, *budget)

    def _logits(self, model: Callable, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(x, training=self.training), tf.float32)

    def _perturb(
        self,
        model: Callable,
        x: tf.Tensor,
        y: tf.Tensor,
        reference: tf.Tensor,
        has_reference: bool,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        steps: tf.Tensor,
    ) -> tf.Tensor:
        self._traces[0] += 1
        model, objective = graph_ready(model), graph_ready(self.objective)
        if self.needs_reference and not has_reference:
            reference = tf.stop_gradient(self._logits(model, x))
        sign = -1.0 if self.targeted else 1.0
        x_adv = random_start(self.rng, x, eps, self.norm, self.random_start)
        batch = tf.shape(x)[0]
        # keep_best: the best iterate so far, whether it succeeds, its loss.
        best = (
            (x_adv, tf.zeros([batch], tf.bool), tf.fill([batch], -float("inf")))
            if self.keep_best else ()
        )

        def remember(best, candidate, logits, loss):
            best_x, best_hit, best_loss = best
            pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
            hit = tf.equal(pred, y)
            hit = hit if self.targeted else tf.logical_not(hit)
            better = tf.logical_or(
                tf.logical_and(hit, tf.logical_not(best_hit)),
                tf.logical_and(tf.equal(hit, best_hit), loss > best_loss),
            )
            mask = tf.reshape(better, [-1] + [1] * (len(x.shape) - 1))
            return (
                tf.where(mask, candidate, best_x),
                tf.logical_or(best_hit, hit),
                tf.where(better, loss, best_loss),
            )

        @loop_step
        def loss_and_grad(x_adv):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = self._logits(model, x_adv)
                loss = sign * objective(y, logits, reference)
            grad = tape.gradient(
                loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            return logits, loss, grad

        def body(i, x_adv, *best):
            logits, loss, grad = loss_and_grad(x_adv)
            if self.keep_best:
                best = remember(best, x_adv, logits, loss)
            step = step_size * ascent_direction(grad, self.norm)
            delta = project(x_adv + step - x, eps, self.norm)
            return (i + 1, tf.stop_gradient(tf.clip_by_value(x + delta, 0.0, 1.0)), *best)

        # An explicit loop, traced without AutoGraph (see `graph_ready`).
        _, x_adv, *best = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), x_adv, *best))
        if not self.keep_best:
            return x_adv
        logits = self._logits(model, x_adv)
        best = remember(best, x_adv, logits, sign * objective(y, logits, reference))
        return best[0]


def fgsm(eps: float, norm: str = "linf", **kwargs: Any) -> ProjectedGradientAttack:
    """FGSM (fast gradient method): one step of size `eps` from the clean input.

    Args:
        eps: Radius of the threat model.
        norm: `"linf"` (FGSM) or `"l2"` (fast gradient method in L2).
        **kwargs: Other `ProjectedGradientAttack` arguments.

    Returns:
        A `ProjectedGradientAttack` with one step and a zero start.
    """
    kwargs.setdefault("random_start", "zero")
    kwargs.setdefault("name", "fgsm")
    return ProjectedGradientAttack(eps=eps, step_size=eps, steps=1, norm=norm, **kwargs)


def validate_attack_params(
    eps: Any = None, step_size: Any = None, steps: Any = None, norm: Any = None
) -> None:
    """Raises ValueError naming the first invalid attack parameter.

    Args:
        eps: Must lie in [0, 1] for L-inf (pixel units), >= 0 for L2.
        step_size: Must be > 0.
        steps: Must be an integer >= 1.
        norm: Must be one of `NORMS`.
    """
    if eps is not None:
        bound = 1.0 if norm in (None, "linf") else float("inf")
        if not 0.0 <= float(eps) <= bound:
            raise ValueError(
                f"`eps` must lie in [0, {bound}] (pixel units) for norm={norm or 'linf'}. "
                f"Received: eps={eps!r}"
            )
    if step_size is not None and not float(step_size) > 0.0:
        raise ValueError(f"`step_size` must be > 0. Received: step_size={step_size!r}")
    if steps is not None and (
        isinstance(steps, bool) or int(steps) != steps or int(steps) < 1
    ):
        raise ValueError(f"`steps` must be an integer >= 1. Received: steps={steps!r}")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")
