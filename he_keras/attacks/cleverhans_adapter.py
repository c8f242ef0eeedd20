"""cleverhans 4.0.0 (`cleverhans.tf2.attacks`) behind the attack interface.

An independent implementation to cross-check ours, wrapped with the settings
that make it correct (see the evaluation notes, section 3):

- true labels are always passed (cleverhans otherwise attacks the model's
  own predictions);
- PGD starts at a uniform random point of radius eps (`rand_init=True,
  rand_minmax=eps`; cleverhans defaults to no random start);
- `sanity_checks=False` (its `np.all` over a list of tensors and bools fails
  on NumPy >= 1.24), inputs clipped to [0, 1];
- SPSA runs one image at a time (it requires batch size 1) and stops at the
  first misclassified iterate (`early_stop_loss_threshold=0`);
- CW-L2 runs one image at a time, untargeted: cleverhans 4.0.0 turns any
  given `y` into a *targeted* attack toward `y` (cleverhans#1228), so it is
  called with `y=None` (it then attacks the predicted label) on correctly
  classified images only.

Two Keras 3 incompatibilities of cleverhans 4.0.0 are bridged here, without
touching cleverhans: `SPSAAdam` calls `Adam(lr=...)`, which Keras 3 rejects,
so `_SPSAAdam` constructs the Keras 3 Adam itself and sets the attributes
cleverhans' estimator reads; CW-L2 resets its optimizer by zeroing
`optimizer.variables()`, which on Keras 3 is a property that includes the
learning rate (zeroing it freezes the attack), so `_ResettableAdam` exposes a
`variables()` method without it. CW's constant also gets the image shape
(cleverhans#1205): with one image its loss term is summed over all `d`
pixels, i.e. the effective constant is `d` times the given one, so the
initial constant passed to cleverhans is divided by `d`.

cleverhans draws its noise from TensorFlow's global generator, so `seed`
calls `tf.random.set_seed(seed)` at the start of each call.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import spsa as spsa_lib
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
from cleverhans.tf2.attacks.carlini_wagner_l2 import CarliniWagnerL2
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from he_keras.attacks.base import (
    Attack,
    check_int,
    logits_of,
    minimal_norm_output,
    predict,
    require,
)
from he_keras.attacks.core import validate_attack_params

METHODS = ("fgsm", "pgd", "bim", "mim", "spsa", "cw_l2")
# Learning rates used when `step_size` is None (the cleverhans defaults).
DEFAULT_LEARNING_RATES = {"spsa": 0.01, "cw_l2": 5e-3}
_NORMS = {"linf": np.inf, "l2": 2}


class _SPSAAdam(spsa_lib.SPSAAdam):
    """cleverhans' SPSA estimator and Adam update, constructible on Keras 3."""

    def __init__(self, learning_rate: float, delta: float, num_samples: int) -> None:
        # SPSAAdam.__init__ passes `lr=` to Adam, which Keras 3 rejects; set up
        # the Keras 3 Adam directly and the fields SPSAAdam's methods read.
        keras.optimizers.Adam.__init__(self, learning_rate=learning_rate)
        self.lr = learning_rate
        self._delta = delta
        self._num_samples = num_samples // 2
        self._num_iters = 1
        self._compare_to_analytic_grad = False


class _ResettableAdam:
    """The optimizer interface cleverhans' CW-L2 uses, on Keras 3 Adam."""

    def __init__(self, learning_rate: float) -> None:
        self._adam = keras.optimizers.Adam(learning_rate)

    def variables(self) -> list:
        """The state CW zeroes between binary-search steps (not the rate)."""
        return [v for v in self._adam.variables if v.name != "learning_rate"]

    def apply_gradients(self, grads_and_vars: Any) -> None:
        self._adam.apply_gradients(grads_and_vars)


class CleverHansAttack(Attack):
    """A cleverhans 4.0.0 attack with safe settings.

    | method | cleverhans call | `step_size` | `steps` |
    |---|---|---|---|
    | `"fgsm"` | `fast_gradient_method` | unused | unused |
    | `"pgd"` | `projected_gradient_descent`, random start | `eps_iter` | `nb_iter` |
    | `"bim"` | `basic_iterative_method` (no random start) | `eps_iter` | `nb_iter` |
    | `"mim"` | `momentum_iterative_method` (decay 1.0) | `eps_iter` | `nb_iter` |
    | `"spsa"` | `spsa` estimator + `projected_optimization` | Adam rate | `nb_iter` |
    | `"cw_l2"` | `CarliniWagnerL2`, untargeted | Adam rate | `max_iterations` |

    SPSA is L-inf only. CW-L2 is a minimal-norm attack: its output is
    projected onto the eps-ball of `norm` and `last_norms` holds the norm of
    the found perturbation (inf where none was found). SPSA and CW-L2 run one
    image at a time and are slow; use them on a few hundred points.

    Args:
        method: One of `METHODS`.
        eps: Radius of the threat model in pixel units.
        step_size: See the table; required for pgd, bim and mim; the
            cleverhans default learning rate for spsa and cw_l2 when None.
        steps: See the table.
        norm: `"linf"` or `"l2"`.
        spsa_samples: SPSA samples per step (even).
        spsa_delta: SPSA finite-difference size.
        binary_search_steps: CW binary-search steps.
        initial_const: CW initial constant (per image, as in the paper).
        seed: Global TensorFlow seed set at the start of every call.

    Example:

    ```python
    attack = CleverHansAttack("pgd", eps=0.3, step_size=0.01, steps=40, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    def __init__(
        self,
        method: str,
        eps: float,
        step_size: Optional[float] = None,
        steps: int = 20,
        norm: str = "linf",
        spsa_samples: int = 128,
        spsa_delta: float = 0.01,
        binary_search_steps: int = 5,
        initial_const: float = 1e-2,
        seed: Optional[int] = None,
    ) -> None:
        require(method in METHODS, "method", method, f"one of {METHODS}")
        validate_attack_params(eps=eps, steps=steps, norm=norm)
        if step_size is None:
            require(
                method not in ("pgd", "bim", "mim"),
                "step_size",
                step_size,
                f"given for method={method!r}",
            )
            step_size = DEFAULT_LEARNING_RATES.get(method)
        if step_size is not None:
            validate_attack_params(step_size=step_size)
        require(
            not (method == "spsa" and norm != "linf"), "norm", norm, "'linf' for SPSA"
        )
        spsa_samples = check_int("spsa_samples", spsa_samples, minimum=2)
        require(spsa_samples % 2 == 0, "spsa_samples", spsa_samples, "even")
        require(spsa_delta > 0.0, "spsa_delta", spsa_delta, "> 0")
        require(initial_const > 0.0, "initial_const", initial_const, "> 0")
        self.method = method
        self.eps = float(eps)
        self.step_size = None if step_size is None else float(step_size)
        self.steps = int(steps)
        self.norm = norm
        self.spsa_samples = spsa_samples
        self.spsa_delta = float(spsa_delta)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps)
        self.initial_const = float(initial_const)
        self.seed = seed
        self.name = f"cleverhans-{method}"
        self.last_norms = None
        self._model: Any = None
        self._model_fn: Optional[Callable] = None
        self._spsa: Optional[Callable] = None

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        config = {
            **super().config(),
            "method": self.method,
            "step_size": self.step_size,
            "steps": self.steps,
            "seed": self.seed,
        }
        if self.method == "spsa":
            config.update(spsa_samples=self.spsa_samples, spsa_delta=self.spsa_delta)
        if self.method == "cw_l2":
            config.update(
                binary_search_steps=self.binary_search_steps,
                initial_const=self.initial_const,
            )
        return config

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self.seed is not None:
            tf.random.set_seed(self.seed)
        model_fn = self._bind(model)
        if self.method == "spsa":
            return self._spsa_attack(model_fn, x, y)
        if self.method == "cw_l2":
            return self._cw_attack(model, model_fn, x, y)
        norm = _NORMS[self.norm]
        common = dict(clip_min=0.0, clip_max=1.0, y=y, sanity_checks=False)
        if self.method == "fgsm":
            x_adv = fast_gradient_method(model_fn, x, self.eps, norm, **common)
        elif self.method == "pgd":
            x_adv = projected_gradient_descent(
                model_fn, x, self.eps, self.step_size, self.steps, norm,
                rand_init=True, rand_minmax=self.eps, **common,
            )
        elif self.method == "bim":
            x_adv = basic_iterative_method(
                model_fn, x, self.eps, self.step_size, self.steps, norm, **common
            )
        else:
            x_adv = momentum_iterative_method(
                model_fn, x, self.eps, self.step_size, self.steps, norm, **common
            )
        return tf.convert_to_tensor(x_adv, tf.float32)

    def _bind(self, model: Callable) -> Callable:
        """One `model_fn` per model (cleverhans' compiled gradient retraces
        for every new Python callable)."""
        if self._model is not model:
            self._model = model
            self._model_fn = lambda inputs: logits_of(model, inputs)
            self._spsa = None
        return self._model_fn

    def _spsa_attack(self, model_fn: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self._spsa is None:
            optimizer = _SPSAAdam(self.step_size, self.spsa_delta, self.spsa_samples)

            def loss_fn(inputs: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
                logits = model_fn(inputs)
                classes = logits.shape[-1]
                return -spsa_lib.margin_logit_loss(logits, label, nb_classes=classes)

            def attack_one(image: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
                return spsa_lib.projected_optimization(
                    loss_fn, image, label, self.eps, self.steps, optimizer,
                    clip_min=0.0, clip_max=1.0, early_stop_loss_threshold=0.0,
                )

            self._spsa = tf.function(attack_one)
        outputs = [self._spsa(x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]
        return tf.concat(outputs, axis=0)

    def _cw_attack(
        self, model: Callable, model_fn: Callable, x: tf.Tensor, y: tf.Tensor
    ) -> tf.Tensor:
        dims = int(np.prod(x.shape[1:]))
        cw = CarliniWagnerL2(
            model_fn,
            y=None,
            batch_size=1,
            clip_min=0.0,
            clip_max=1.0,
            binary_search_steps=self.binary_search_steps,
            max_iterations=self.steps,
            initial_const=self.initial_const / dims,
            learning_rate=self.step_size,
        )
        images = x.numpy()
        outputs = images.copy()
        correct = np.asarray(predict(model, x) == y)
        for i in np.flatnonzero(correct):
            cw.optimizer = _ResettableAdam(self.step_size)
            outputs[i] = cw.attack(images[i : i + 1])[0]
        x_found = tf.convert_to_tensor(outputs)
        found = tf.not_equal(predict(model, x_found), y)
        x_adv, self.last_norms = minimal_norm_output(x, x_found, found, self.eps, self.norm)
        return x_adv
