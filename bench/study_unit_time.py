"""Training time of one reproduction-study unit: this checkout against another.

Trains the unit's model (`experiments.units.train_config` of the arm's spec,
then `he_keras.runs.run`, as `experiments.units.run_unit` does, without the
evaluation that follows) as the study's workers train it: one thread, two
units at once, one per core (`experiments.workers`). Each round starts this
checkout and `--other` together, each in a fresh process importing its own
`he_keras` and `experiments`, and reads both `train_seconds`. Prints each
round and the paired ratio other / this (above 1: this checkout is faster)
with a 95 % bootstrap interval over the rounds
(`experiments.stats.ratio_interval`). Run it on an otherwise idle machine.

Usage (from the repository root):
  python bench/study_unit_time.py --other=/path/to/old/checkout --dataset=mnist5k --arm=pgdat_he --rounds=3
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

_OTHER = flags.DEFINE_string("other", None, "The checkout to compare with (its root).", required=True)
_DATASET = flags.DEFINE_string("dataset", "mnist5k", "The unit's dataset.")
_ARM = flags.DEFINE_string("arm", "pgdat_he", "The unit's arm (experiments.arms.ARMS).")
_SEED = flags.DEFINE_integer("seed", 0, "The unit's seed.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds, each one pair of units trained at once (an interval "
                                            "needs two or more).", lower_bound=1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A unit's training in the checkout `root`, one thread as a study worker; prints train_seconds.
CHILD = """
import json, sys, tempfile
root, dataset, arm, seed = sys.argv[1:]
sys.path.insert(0, root)
import tensorflow as tf
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
import he_keras
from experiments.arms import ARMS
from experiments.units import train_config
from he_keras.runs import run
assert he_keras.__file__.startswith(root), he_keras.__file__
with tempfile.TemporaryDirectory() as runs:
    metrics = run(train_config(ARMS[arm].spec(dataset, int(seed)), runs + "/unit", 0, runs))
print(json.dumps({"train_seconds": metrics["train_seconds"]}))
"""


def start(root: str) -> subprocess.Popen:
    """The unit's training in the checkout `root`, started in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, os.path.abspath(root), _DATASET.value, _ARM.value, str(_SEED.value)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root,
    )


def seconds(process: subprocess.Popen) -> float:
    """`train_seconds` of a finished child."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a unit's training failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])["train_seconds"]


def main(argv):
    del argv
    sys.path.insert(0, ROOT)
    from experiments import stats

    this, other = [], []
    for round_ in range(_ROUNDS.value):
        children = start(ROOT), start(_OTHER.value)
        this.append(seconds(children[0]))
        other.append(seconds(children[1]))
        print(f"  round {round_ + 1}: this {this[-1]:.1f} s, other {other[-1]:.1f} s", flush=True)
    line = (f"{_DATASET.value}/{_ARM.value}/seed{_SEED.value}: this {' / '.join(f'{v:.1f}' for v in this)} s, "
            f"other {' / '.join(f'{v:.1f}' for v in other)} s")
    if len(this) > 1:  # an interval needs two rounds or more
        interval = stats.ratio_interval(other, this)
        line += (f"; other / this: median {interval['ratio']:.2f} "
                 f"(95 % interval {interval['ci_low']:.2f}-{interval['ci_high']:.2f})")
    print(line)


if __name__ == "__main__":
    app.run(main)
