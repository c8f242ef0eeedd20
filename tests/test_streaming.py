"""Large datasets stream: a run reads what its steps need, never a whole split.

On tfds mock data of ImageNet-style images (encoded, of random sizes), a run
with `--steps_per_epoch=2` and the default validation split is made on a
split of 200 and one of 8,000 examples (40x). Every example a tfds split
hands out is counted, so the test asserts what the data path reads, not
how long it takes: before the first training step at most the shuffle buffer
and a few prefetched batches, over the run the same for both sizes.
"""

import json
import os
import signal

import numpy as np

import forkrun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A run on mock imagenette that counts the examples each tfds split hands out
# (a `tf.py_function` in a map over everything `tfds.load` returns), before
# the first training step and in total. The shuffle buffer is made small (64)
# so that both splits are larger than it.
_COUNTED_RUN = r"""
import json, resource, sys, time
import keras, tensorflow as tf, tensorflow_datasets as tfds
from unittest import mock
import he_keras.data.dataset as dataset_module
from he_keras.runs import TrainConfig, run

n, out, buffer = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
dataset_module.SHUFFLE_BUFFER = buffer
reads, first_step = {}, {}
real_load = tfds.load

def counted(ds, split):
    def count(*example):
        def bump():
            reads[split] = reads.get(split, 0) + 1
            return 0
        done = tf.py_function(bump, [], tf.int32)
        with tf.control_dependencies([done]):
            return tuple(tf.identity(part) for part in example)
    return ds.map(count)

def spy(name, split, **kwargs):
    got = real_load(name, split=split, **kwargs)
    loaded, info = got if kwargs.get("with_info") else (got, None)
    if isinstance(split, list):
        loaded = [counted(ds, s) for ds, s in zip(loaded, split)]
    else:
        loaded = counted(loaded, split)
    return (loaded, info) if kwargs.get("with_info") else loaded

class FirstStep(keras.callbacks.Callback):
    # After the step: Keras calls the batch-begin hook before the step reads its batch.
    def on_train_batch_end(self, batch, logs=None):
        if not first_step:
            first_step.update(reads)
            first_step["seconds"] = time.time() - started

started = time.time()
with tfds.testing.mock_data(num_examples=n), mock.patch.object(tfds, "load", spy):
    metrics = run(TrainConfig(
        dataset="imagenette", model="wide_resnet", depth=10, width=1, batch_size=4,
        steps_per_epoch=2, epochs=1, steps=1, val_steps=1, n_eval=8, eval_steps=1,
        eps=4 / 255, output_dir=out, verbose=0, tensorboard=False, seed=0,
    ), [FirstStep()])
print(json.dumps({"reads": reads, "first_step": first_step, "metrics": metrics,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _counted_run(n, out, buffer=64):
    done = forkrun.run(["-c", _COUNTED_RUN, str(n), str(out), str(buffer)], timeout=600, cwd=ROOT,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_reads_the_same_examples_from_a_split_40_times_larger(tmp_path):
    small, large = _counted_run(200, tmp_path / "small"), _counted_run(8000, tmp_path / "large")
    # Beyond the shuffle buffer and the two batches, the parallel augmentation
    # map and the prefetch read ahead by at most this many examples.
    read_ahead = 32
    for result, n in ((small, 200), (large, 8000)):
        metrics, reads = result["metrics"], result["reads"]
        n_val = round(0.1 * n)
        cut = n - n_val
        # The validation split is the tail of the training split, by tfds slicing.
        assert metrics["validation"]["n_held_out"] == n_val
        assert set(reads) <= {"train", "validation", f"train[:{cut}]", f"train[{cut}:{n}]"}, reads
        # Two steps of 4: the shuffle buffer (64) and the batches; nothing else.
        assert reads[f"train[:{cut}]"] <= 64 + 2 * 4 + read_ahead, reads
        assert 4 <= result["first_step"][f"train[:{cut}]"] <= 64 + 2 * 4 + read_ahead
        # One validation batch (2 of 45 or 1,800 batches per epoch -> 1 of 5 or 200).
        assert metrics["validation"]["n_examples"] == 4
        assert reads[f"train[{cut}:{n}]"] <= 4 + read_ahead, reads
        # The final evaluation reads its n_eval examples (and what the parallel map prefetches).
        assert metrics["test"]["n_examples"] == 8 and reads.get("validation", 0) <= 8 + read_ahead, reads
        assert metrics["steps_per_epoch"] == 2 and metrics["optimizer_updates"] == 2
        # Nothing reads the unsliced training split.
        assert reads.get("train", 0) == 0, reads
    assert large["reads"]["train[:7200]"] < 0.02 * 7200


# A run on mock imagenette (encoded images of random sizes, random-resized
# crops), SIGKILLed after batch `kill_batch` of epoch `kill_epoch` when those
# are given (-1: never).
_STREAMED_RUN = r"""
import os, signal, sys
import keras, tensorflow_datasets as tfds
from he_keras.runs import TrainConfig, run

out, kill_epoch, kill_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

class Sigkill(keras.callbacks.Callback):
    epoch = None
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (kill_epoch, kill_batch):
            os.kill(os.getpid(), signal.SIGKILL)

with tfds.testing.mock_data(num_examples=60):
    run(TrainConfig(
        dataset="imagenette", model="wide_resnet", depth=10, width=1, batch_size=4,
        steps_per_epoch=3, epochs=2, steps=1, val_steps=1, n_eval=4, eval_steps=1,
        eps=4 / 255, lr_schedule="cosine", output_dir=out, verbose=2, tensorboard=False, seed=5,
        checkpoint_seconds=0,  # after every epoch: the kill comes in the second
    ), [Sigkill()])
"""


def test_a_streamed_run_killed_mid_epoch_resumes_bit_identically(tmp_path):
    import concurrent.futures
    import subprocess
    import sys

    import keras

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")

    def fresh(*args):
        return subprocess.run([sys.executable, "-c", _STREAMED_RUN, *args], capture_output=True,
                              text=True, timeout=600, cwd=ROOT, env=env)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        killing = pool.submit(fresh, resumed, "1", "1")
        done = forkrun.run(["-c", _STREAMED_RUN, reference, "-1", "-1"], timeout=600, cwd=ROOT, env=env)
        killed = killing.result()
    assert done.returncode == 0, done.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    again = fresh(resumed, "-1", "-1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at epoch 1" in again.stdout
    weights = [keras.saving.load_model(os.path.join(d, "model.keras")).get_weights() for d in (reference, resumed)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(*weights)) == 0.0
    metrics = []
    for d in (reference, resumed):
        with open(os.path.join(d, "metrics.json")) as f:
            metrics.append(json.load(f))
    assert metrics[0]["history"] == metrics[1]["history"] and metrics[0]["test"] == metrics[1]["test"]
    assert len(metrics[1]["history"]["val_adv_accuracy"]) == 2 and metrics[1]["optimizer_updates"] == 6
