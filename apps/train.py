"""Adversarial training with or without hypersphere embedding, from flags.

Usage:
  python apps/train.py --flagfile=configs/quickstart.cfg
  python apps/train.py --flagfile=configs/trades_he.cfg --output_dir=runs/trades_he

Every flag is validated before any compute; invalid input ends the run with
one `error:` line naming the value and exit code 2, writing nothing. A run
directory that holds a checkpoint is resumed from its last finished epoch,
with the settings it was started with (an unreadable newest checkpoint falls
back to the previous one, with a warning); --noresume refuses such a
directory instead of overwriting it. Per-epoch validation metrics go to the
progress bar, metrics.json and TensorBoard (tensorboard --logdir runs/).
"""

from __future__ import annotations

import os

# Before TensorFlow loads (importing he_keras loads it): its C++ start-up logs stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from he_keras import cli
from he_keras.defaults import DEFAULT_SCALE, DIGITS_EPS, EVAL_PGD_STEPS, MARGIN_OF_HEAD

_DATASET = flags.DEFINE_string("dataset", "digits", "digits, mnist5k, or a tfds dataset: mnist, cifar10, cifar100, svhn_cropped, imagenette[/<config>], imagenet2012.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_N_TRAIN = flags.DEFINE_integer("n_train", 0, "Use only the first N training examples (0 = all).")
_MODEL = flags.DEFINE_string("model", "small_cnn", "Backbone name (see he_keras.models.MODELS).")
_DEPTH = flags.DEFINE_integer("depth", 34, "WideResNet depth (6n+4).")
_WIDTH = flags.DEFINE_integer("width", 10, "WideResNet widening factor.")
_HEAD = flags.DEFINE_string("head", "he", "linear | he | mhe.")
_S = flags.DEFINE_float("s", DEFAULT_SCALE, "Scale s of the HE / m-HE logits.")
_M = flags.DEFINE_float("m", MARGIN_OF_HEAD, "HE margin m; -1 = the head's default (0.2 HE, 0.1 m-HE, 0 linear).")
_FN = flags.DEFINE_boolean("feature_norm", True, "Feature normalization (FN) in the HE head.")
_WN = flags.DEFINE_boolean("weight_norm", True, "Weight normalization (WN) in the HE head.")
_FRAMEWORK = flags.DEFINE_string("framework", "pgdat", "Adversarial-training framework (see he_keras.training.FRAMEWORKS).")
_EPS = flags.DEFINE_float("eps", DIGITS_EPS, "Attack radius in pixel units ([0,1] images).")
_STEP_SIZE = flags.DEFINE_float("step_size", None, "Step size of the training attack; default: the framework's own (PGD 2.5*eps/steps, FastAT 1.25*eps, FreeAT eps).")
_STEPS = flags.DEFINE_integer("steps", 7, "Steps of the training attack.")
_EPS_WARMUP = flags.DEFINE_float(
    "eps_warmup_epochs", 0.0, "Epochs over which the training attack's eps (and step size) grows linearly from 0; 0 = none."
)
_NORM = flags.DEFINE_string("norm", "linf", "linf | l2.")
_RANDOM_START = flags.DEFINE_string("random_start", "", "zero | uniform | normal; empty = framework default.")
_ATTACK_BN = flags.DEFINE_boolean("attack_bn_training", None, "Craft training attacks with BN in training mode; default: the framework's own (FastAT yes, others no).")
_BETA = flags.DEFINE_float("beta", None, "TRADES / HAT KL weight, ALP pairing weight.")
_GAMMA = flags.DEFINE_float("gamma", None, "HAT helper-loss weight.")
_HELPER_STEP = flags.DEFINE_float("helper_step", None, "HAT helper-example extrapolation h.")
_REPLAYS = flags.DEFINE_integer("replays", None, "FreeAT minibatch replays m.")
_HELPER_MODEL = flags.DEFINE_string("helper_model", None, "HAT: .keras standard model giving helper labels.")
_INIT_MODEL = flags.DEFINE_string(
    "init_model", "", "A .keras model whose weights start the run (adversarial fine-tuning); a resumed run ignores it."
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", 15, "Training epochs (FreeAT: the paper's budget, ceil(epochs / replays) passes)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "adam", "sgd | adam.")
_LR = flags.DEFINE_float("lr", 2e-3, "(Peak) learning rate.")
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
_NESTEROV = flags.DEFINE_boolean("nesterov", False, "Nesterov momentum.")
_WD = flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
_LR_SCHEDULE = flags.DEFINE_string("lr_schedule", "constant", "constant | piecewise | cosine | onecycle.")
_LR_DECAY_EPOCHS = flags.DEFINE_list("lr_decay_epochs", [], "Epochs of the piecewise decays, e.g. 75,90.")
_LR_DECAY_FACTOR = flags.DEFINE_float("lr_decay_factor", 0.1, "Multiplier at each piecewise decay.")
_CALLBACKS = flags.DEFINE_list("callbacks", [], "Training callbacks (see he_keras.training.CALLBACKS).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/train", "Run directory (checkpoints, model.keras, metrics.json).")
_RESUME = flags.DEFINE_boolean(
    "resume", True, "Resume from the run directory's last checkpoint (--noresume: refuse a directory that has one)."
)
_STRATEGY = flags.DEFINE_string("strategy", "default", "default | mirrored | multi_worker (TF_CONFIG).")
_JIT = flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (slower for conv nets on CPU).")
_PRECISION = flags.DEFINE_string("precision", "float32", "float32 | mixed_bfloat16 | mixed_float16.")
_EVAL_STEPS = flags.DEFINE_integer("eval_steps", EVAL_PGD_STEPS, "PGD steps of the final evaluation on the test split.")
_EVAL_STEP_SIZE = flags.DEFINE_float(
    "eval_step_size", 0.0, "PGD step size of validation and the final evaluation (0 = 2.5*eps/steps, he_keras.defaults.pgd_step_size)."
)
_N_EVAL = flags.DEFINE_integer("n_eval", 0, "Test examples of the final evaluation (0 = all).")
_VALIDATION_SPLIT = flags.DEFINE_float(
    "validation_split", 0.1, "Share of the training data held out (seeded, stratified) for validation; 0 = none."
)
_VAL_STEPS = flags.DEFINE_integer("val_steps", 10, "PGD steps of the per-epoch validation (val_adv_accuracy).")
_TENSORBOARD = flags.DEFINE_boolean("tensorboard", True, "Write TensorBoard logs to <output_dir>/logs.")
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads (1 was fastest for small CNNs on 2 cores).")
_INTRA_OP = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0 = all cores).")
_VERBOSE = flags.DEFINE_integer("verbose", 2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")

_FRAMEWORK_FLAGS = {
    "beta": _BETA,
    "gamma": _GAMMA,
    "helper_step": _HELPER_STEP,
    "replays": _REPLAYS,
    "helper_model": _HELPER_MODEL,
}


def config_from_flags():
    """Builds the validated `TrainConfig` of the command line."""
    from he_keras.training.runner import TrainConfig

    try:
        decay_epochs = tuple(float(e) for e in _LR_DECAY_EPOCHS.value)
    except ValueError as err:
        raise ValueError(f"`lr_decay_epochs` must be numbers. Received: {_LR_DECAY_EPOCHS.value}") from err
    config = TrainConfig(
        dataset=_DATASET.value,
        data_dir=_DATA_DIR.value,
        n_train=_N_TRAIN.value,
        model=_MODEL.value,
        depth=_DEPTH.value,
        width=_WIDTH.value,
        head=_HEAD.value,
        s=_S.value,
        m=_M.value,
        feature_norm=_FN.value,
        weight_norm=_WN.value,
        framework=_FRAMEWORK.value,
        eps=_EPS.value,
        step_size=_STEP_SIZE.value,
        steps=_STEPS.value,
        eps_warmup_epochs=_EPS_WARMUP.value,
        norm=_NORM.value,
        random_start=_RANDOM_START.value,
        attack_bn_training=_ATTACK_BN.value,
        framework_params={k: f.value for k, f in _FRAMEWORK_FLAGS.items() if f.value is not None},
        epochs=_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        optimizer=_OPTIMIZER.value,
        lr=_LR.value,
        momentum=_MOMENTUM.value,
        nesterov=_NESTEROV.value,
        weight_decay=_WD.value,
        lr_schedule=_LR_SCHEDULE.value,
        lr_decay_epochs=decay_epochs,
        lr_decay_factor=_LR_DECAY_FACTOR.value,
        callbacks=tuple(_CALLBACKS.value),
        seed=_SEED.value,
        output_dir=_OUTPUT_DIR.value,
        resume=_RESUME.value,
        strategy=_STRATEGY.value,
        jit_compile=_JIT.value,
        precision=_PRECISION.value,
        eval_steps=_EVAL_STEPS.value,
        eval_step_size=_EVAL_STEP_SIZE.value,
        n_eval=_N_EVAL.value,
        validation_split=_VALIDATION_SPLIT.value,
        val_steps=_VAL_STEPS.value,
        tensorboard=_TENSORBOARD.value,
        verbose=_VERBOSE.value,
        init_model=_INIT_MODEL.value,
    )
    config.validate()
    return config


def main() -> None:
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.config.threading.set_intra_op_parallelism_threads(_INTRA_OP.value)
    from he_keras.training import runner

    config = config_from_flags()
    metrics = runner.run(config)
    test = metrics["test"]
    print(
        f"clean accuracy: {test['clean_accuracy']:.4f}  "
        f"{test['attack']['name']} accuracy (eps={config.eps:g}): {test['robust_accuracy']:.4f}  "
        f"on {test['n_examples']} test images; model: {metrics['model_path']}"
    )


if __name__ == "__main__":
    cli.run(main)
