"""Adversarial training with or without hypersphere embedding, from flags.

Usage:
  python apps/train.py --flagfile=configs/quickstart.cfg
  python apps/train.py --flagfile=configs/trades_he.cfg --output_dir=runs/trades_he

The flags are generated from the run's settings (`he_keras.runs.TrainConfig`:
one flag per setting, with its default and help; `--helpfull` lists them),
plus the framework hyperparameters and the process's thread counts. Every
flag is validated before any compute; invalid input ends the run with one
`error:` line naming the value and exit code 2, writing nothing. A run
directory that holds a checkpoint is resumed from its last checkpointed epoch,
with the settings it was started with (an unreadable newest checkpoint falls
back to the previous one, with a warning); --noresume refuses such a
directory instead of overwriting it. Per-epoch validation metrics go to the
progress bar, metrics.json and TensorBoard (tensorboard --logdir runs/).
"""

from __future__ import annotations

import os
import sys

# Before TensorFlow loads (importing he_keras loads it): its C++ start-up logs stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from he_keras import cli
from he_keras.backends import BackendError

# The flags come from the run's settings, so the run layer loads before they
# parse: under another Keras backend that import is the first error.
try:
    from he_keras.runs import TrainConfig, run
    from he_keras.runs.flags import config_from_flags as _config_from_flags
    from he_keras.runs.flags import define_flags
except BackendError as err:
    cli.fail(str(err))

define_flags(module_name=sys.argv[0] if __name__ == "__main__" else __name__)  # listed by --help
# Process settings, not run settings: TensorFlow reads them once, at start-up.
_INTER_OP = flags.DEFINE_integer("inter_op_threads", 1, "TF inter-op threads (1 was fastest for small CNNs on 2 cores).")
_INTRA_OP = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0 = all cores).")


def config_from_flags() -> TrainConfig:
    """Builds the validated `TrainConfig` of the command line."""
    return _config_from_flags(flags.FLAGS)


def main() -> None:
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.config.threading.set_inter_op_parallelism_threads(_INTER_OP.value)
    tf.config.threading.set_intra_op_parallelism_threads(_INTRA_OP.value)
    config = config_from_flags()
    metrics = run(config)
    test = metrics["test"]
    print(
        f"clean accuracy: {test['clean_accuracy']:.4f}  "
        f"{test['attack']['name']} accuracy (eps={config.eps:g}): {test['robust_accuracy']:.4f}  "
        f"on {test['n_examples']} test images; model: {metrics['model_path']}"
    )


if __name__ == "__main__":
    cli.run(main)
