"""Fault tolerance: SIGKILL mid-epoch and resume, an unreadable newest
checkpoint, checkpoint contents, atomic writes.

Measured on TF 2.21 CPU: a run (PGD-AT, or FreeAT with its perturbation
buffer; both with an eps warm-up) killed with SIGKILL in the middle of its second epoch and resumed
from its epoch-1 checkpoint ends with weights, history (validation included)
and test metrics bit-identical (max |difference| 0.0) to an uninterrupted
run with the same seed. Shuffling is reseeded per epoch, the attack generators, optimizer
slots and step count, HE scale and Keras seed-generator states are restored,
and the CPU kernels of this small CNN are deterministic. (Training with
augmentation is not bit-reproducible even uninterrupted: the parallel
`tf.data` map draws its stateful random crops in a scheduling-dependent
order.)

The runs compared with each other are separate processes: the uninterrupted
reference run is forked from the `forkrun` server (TensorFlow imported once),
the killed and resumed runs are fresh interpreters (their own hash seed and
memory layout, as a user's later `python apps/train.py` would have); the
killed run trains while the reference run does.
"""

import concurrent.futures
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import forkrun
from he_keras.layers import HypersphereDense
from he_keras.models import build_model
from he_keras.training import PGDAT
from he_keras.files import write_atomic
from he_keras.runs import TrainConfig, run
from he_keras.training.checkpointing import training_checkpoint
from helpers import digits_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_APP = os.path.join(ROOT, "apps", "train.py")
# Small but complete: Adam slots, a cosine LR schedule over the optimizer
# step count, PGD with a uniform random start, the HE head, and an eps
# warm-up over 2.5 epochs (the kill below falls inside it for PGD-AT; the
# radius of a batch depends on its epoch and batch index only).
FLAGS = [
    "--dataset=digits", "--n_train=320", "--epochs=3", "--batch_size=64",
    "--steps=2", "--step_size=0.15", "--lr_schedule=cosine", "--n_eval=48",
    "--eval_steps=3", "--seed=7", "--verbose=0", "--eps_warmup_epochs=2.5",
    # A checkpoint after every epoch (these runs take seconds, the default 30 s).
    "--checkpoint_seconds=0",
]
# FreeAT: 6 epochs of 2 replays are 3 passes; its buffer must be restored.
FREEAT_FLAGS = [
    *FLAGS, "--framework=freeat", "--replays=2", "--steps=1", "--step_size=0.3", "--epochs=6",
]
# The speed levers on (issue 28): three steps per compiled call (Keras
# `steps_per_execution`): 288 training examples in batches of 32 are three
# calls per epoch, and the kill below comes after the first call of the
# second epoch; no warm-up, which needs a hook before every batch; and no
# clean forward pass for the training clean_accuracy.
SPE_FLAGS = [*FLAGS, "--eps_warmup_epochs=0", "--batch_size=32", "--steps_per_execution=3",
             "--notrain_clean_accuracy"]
RUNS = {"pgdat": FLAGS, "freeat": FREEAT_FLAGS, "pgdat_steps_per_execution": SPE_FLAGS}
KILL_EPOCH, KILL_BATCH = 1, 2  # 0-based: after the third batch of the second epoch

# Parses the flags exactly as apps/train.py does, then trains with a callback
# that SIGKILLs the process in the middle of an epoch.
KILLED_RUN = r"""
import os
import signal
import sys

import keras
from absl import flags

import importlib.util
from he_keras.runs import run

spec = importlib.util.spec_from_file_location("train_app", os.path.join(sys.argv[1], "apps", "train.py"))
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)

class SigkillMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

flags.FLAGS(["train.py", *sys.argv[4:]])
run(train.config_from_flags(), [SigkillMidEpoch(int(sys.argv[2]), int(sys.argv[3]))])
"""


def _python(*args):
    """A fresh Python interpreter."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


def _forked(*args):
    """A Python process forked from the `forkrun` server."""
    return forkrun.run(args, timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "model.keras")).get_weights()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run of each flag set, trained once per module."""
    runs = {}

    def get(name):
        if name not in runs:
            out = str(tmp_path_factory.mktemp("reference") / name)
            proc = _forked(TRAIN_APP, *RUNS[name], f"--output_dir={out}")
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[name] = out
        return runs[name]

    return get


def _assert_same_run(got_dir, expected_dir):
    diff = max(float(np.abs(a - b).max()) for a, b in zip(_weights(expected_dir), _weights(got_dir)))
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run's by {diff}"
    with open(os.path.join(expected_dir, "metrics.json")) as f:
        expected = json.load(f)
    with open(os.path.join(got_dir, "metrics.json")) as f:
        got = json.load(f)
    assert got["history"] == expected["history"] and got["test"] == expected["test"]
    return got


@pytest.mark.parametrize("name", sorted(RUNS))
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(name, tmp_path, reference_run):
    flags, resumed = RUNS[name], str(tmp_path / "resumed")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        killing = pool.submit(
            _python, "-c", KILLED_RUN, ROOT, str(KILL_EPOCH), str(KILL_BATCH), *flags, f"--output_dir={resumed}"
        )
        reference = reference_run(name)  # trained meanwhile, if not yet
        killed = killing.result()
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # Killed in epoch 2: the epoch-1 checkpoint, a complete metrics.json, no model.
    assert tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints")).endswith("ckpt-1")
    with open(os.path.join(resumed, "metrics.json")) as f:
        assert len(json.load(f)["history"]["loss"]) == 1
    assert not os.path.exists(os.path.join(resumed, "model.keras"))

    # --resume is the default; --verbose may change on resume and shows the
    # epochs run: one fit counting on from the resumed epoch.
    proc = _python(TRAIN_APP, *flags, f"--output_dir={resumed}", "--verbose=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ckpt-1 at epoch 1" in proc.stdout
    assert "Epoch 1/3" not in proc.stdout and "Epoch 2/3" in proc.stdout and "Epoch 3/3" in proc.stdout
    got = _assert_same_run(resumed, reference)
    # Three passes (FreeAT: 6 epochs / 2 replays), validated every epoch.
    assert len(got["history"]["loss"]) == 3 and len(got["history"]["val_adv_accuracy"]) == 3
    assert ("clean_accuracy" in got["history"]) is ("--notrain_clean_accuracy" not in flags)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference_run):
    run_dir = str(tmp_path / "run")
    shutil.copytree(reference_run("pgdat"), run_dir)
    checkpoints = os.path.join(run_dir, "checkpoints")
    (newest,) = glob.glob(os.path.join(checkpoints, "ckpt-3.data-*"))
    _truncate(newest)
    proc = _python(TRAIN_APP, *FLAGS, f"--output_dir={run_dir}", "--verbose=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and newest in warnings[0], proc.stderr[-3000:]
    assert "ckpt-2 at epoch 2" in proc.stdout and "Epoch 3/3" in proc.stdout
    # Epoch 3 was trained again from epoch 2's state: the same run, no garbage.
    _assert_same_run(run_dir, reference_run("pgdat"))

    # Both kept checkpoints unreadable: one error line, exit 2, nothing trained.
    for path in glob.glob(os.path.join(checkpoints, "ckpt-*.data-*")):
        _truncate(path)
    proc = _forked(TRAIN_APP, *FLAGS, f"--output_dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No usable checkpoint" in errors[0], proc.stderr[-3000:]


def test_checkpoint_restores_keras_seed_generators(tmp_path):
    """Dropout masks after a restore are the ones the original run drew."""
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.5),
        HypersphereDense(10),
    ])
    trainer = PGDAT(classifier, eps=0.1, step_size=0.05, steps=1, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    trainer.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)
    checkpoint = training_checkpoint(trainer, tf.Variable(1, dtype=tf.int64))
    path = checkpoint.write(str(tmp_path / "ckpt"))
    after = []
    for _ in range(2):
        checkpoint.read(path).assert_existing_objects_matched()
        trainer.fit(x[64:128], y[64:128], batch_size=64, epochs=1, verbose=0, shuffle=False)
        after.append(trainer.classifier.get_weights())
    for first, second in zip(*after):
        np.testing.assert_array_equal(first, second)


def test_checkpoints_are_written_when_due(tmp_path):
    """After the epoch that ends `interval_seconds` past the previous
    checkpoint, after an epoch that stops the run, after fit's last epoch and
    when a fit ends early; `metrics.json` after every epoch (a fake clock:
    each epoch takes 4 s, a checkpoint none)."""
    from types import SimpleNamespace

    from he_keras.training.checkpointing import EpochCheckpoint

    def saved_epochs(interval, epochs=6, stop_after=None, ends_after=None):
        now = [0.0]
        epoch = tf.Variable(0, dtype=tf.int64)
        directory = tmp_path / f"{interval}-{epochs}-{stop_after}-{ends_after}"
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(epoch=epoch), str(directory), None)
        callback = EpochCheckpoint(manager, epoch, tf.Variable(False), str(directory / "metrics.json"),
                                   {}, {}, [], interval_seconds=interval, clock=lambda: now[0])
        callback.set_model(SimpleNamespace(stop_training=False))
        callback.set_params({"epochs": epochs})
        callback.on_train_begin()
        for e in range(epochs if ends_after is None else ends_after + 1):
            now[0] += 4.0
            callback.model.stop_training = e == stop_after
            callback.on_epoch_end(e, {"loss": float(e)})
            assert len(json.loads((directory / "metrics.json").read_text())["history"]["loss"]) == e + 1
            if callback.model.stop_training:
                break
        callback.on_train_end()
        return [int(tf.train.load_checkpoint(path).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
                for path in manager.checkpoints]

    assert saved_epochs(0) == [1, 2, 3, 4, 5, 6]
    assert saved_epochs(10) == [3, 6]  # 12 s after the start, then the last epoch
    assert saved_epochs(8) == [2, 4, 6]
    assert saved_epochs(100, stop_after=1) == [2]
    assert saved_epochs(100, epochs=1) == [1]
    # A fit that stops before its `epochs` (Keras' max_epochs) still ends checkpointed.
    assert saved_epochs(10, ends_after=3) == [3, 4]
    with pytest.raises(ValueError, match="interval_seconds=-1"):
        EpochCheckpoint(None, None, None, "", {}, {}, [], interval_seconds=-1)


def test_a_run_killed_before_its_first_checkpoint_starts_over_and_ends_the_same(tmp_path, reference_run):
    """With the default interval, a run of seconds has no checkpoint when the
    kill comes: the next command trains it from the start, to the same end."""
    flags, resumed = [*FLAGS, "--checkpoint_seconds=1000000"], str(tmp_path / "resumed")
    killed = _python("-c", KILLED_RUN, ROOT, str(KILL_EPOCH), str(KILL_BATCH), *flags, f"--output_dir={resumed}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints")) is None
    with open(os.path.join(resumed, "metrics.json")) as f:
        assert len(json.load(f)["history"]["loss"]) == 1
    proc = _python(TRAIN_APP, *flags, f"--output_dir={resumed}", "--verbose=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resumed" not in proc.stdout and "Epoch 1/3" in proc.stdout
    _assert_same_run(resumed, reference_run("pgdat"))


def test_resume_drops_history_of_an_uncheckpointed_epoch(tmp_path):
    """A kill after metrics.json but before the checkpoint repeats that epoch once."""
    config = TrainConfig(
        n_train=128, epochs=1, steps=1, step_size=0.3, n_eval=16, eval_steps=1,
        output_dir=str(tmp_path), verbose=0, seed=2,
    )
    run(config)
    path = tmp_path / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["history"] = {k: v + [123.0] for k, v in metrics["history"].items()}
    path.write_text(json.dumps(metrics))
    resumed = run(dataclasses.replace(config, epochs=2))
    assert len(resumed["history"]["loss"]) == 2 and 123.0 not in resumed["history"]["loss"]


# Replaces a file through write_atomic, SIGKILLing itself halfway through the
# new content.
KILLED_WRITE = r"""
import os
import signal
import sys

from he_keras.files import write_atomic

def half_then_die(tmp):
    with open(sys.argv[2], "rb") as src, open(tmp, "wb") as dst:
        data = src.read()
        dst.write(data[: len(data) // 2])
        dst.flush()
        os.fsync(dst.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

write_atomic(sys.argv[1], half_then_die, suffix=".keras")
"""


def test_kill_during_atomic_write_keeps_the_previous_model(tmp_path):
    old, new = str(tmp_path / "model.keras"), str(tmp_path / "new.keras")
    build_model("small_cnn", (8, 8, 1), 10, head="he").save(old)
    build_model("small_cnn", (8, 8, 1), 10, head="mhe").save(new)
    before = open(old, "rb").read()
    proc = _forked("-c", KILLED_WRITE, old, new)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert open(old, "rb").read() == before
    keras.saving.load_model(old)  # still a complete archive
    # Without a kill the new file replaces the old one, with the usual mode.
    write_atomic(old, lambda tmp: shutil.copyfile(new, tmp), suffix=".keras")
    assert open(old, "rb").read() == open(new, "rb").read()
    assert oct(os.stat(old).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
