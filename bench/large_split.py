"""Time and memory of a short ImageNet-style run against the size of its split.

`--app=train` runs `apps/train.py`'s flags (default: `--dataset=imagenette
--model=preact_resnet18 --steps_per_epoch=2 --epochs=1`, the default
validation split) on tfds mock data (`tfds.testing.mock_data`, encoded
images of random sizes) of each `--sizes` examples per split, one fresh
process per run, the sizes interleaved over `--repeats` rounds, and prints
the medians of: wall time of the process, time from start to the end of the
first training step, and peak resident memory (`ru_maxrss`). Flags after `--` go
to the run (e.g. `-- --n_eval=64`).

`--app=evaluate` runs `apps/evaluate.py` instead (default: `--dataset=imagenette
--suite=quick --chunk_size=32`) on a small CNN with an HE head built for
224x224 images, with `--n_examples` set to each size (the mock split holds
that many), and prints the same medians but the first-step time.

Usage (from the repository root):
  python bench/large_split.py --sizes=1000,40000 --repeats=3 -- --n_eval=64
  python bench/large_split.py --app=evaluate --sizes=64,512 --repeats=3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["1000", "40000"], "Mock examples per split.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds (median).")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")
_APP = flags.DEFINE_enum("app", "train", ["train", "evaluate"], "The app to run.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FLAGS = {
    "train": ["--dataset=imagenette", "--model=preact_resnet18", "--steps_per_epoch=2", "--epochs=1"],
    "evaluate": ["--dataset=imagenette", "--suite=quick", "--chunk_size=32"],
}

# One run of apps/train.py's flags under mock data, timing its first step.
_ONE_RUN = r"""
import importlib.util, json, os, resource, sys, time
started = time.time()
import keras, tensorflow_datasets as tfds
from absl import flags
root, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("train_app", os.path.join(root, "apps", "train.py"))
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
from he_keras.runs import run
first = []

class FirstStep(keras.callbacks.Callback):
    # At the end of the first step: Keras calls the batch-begin hook before
    # the step has read its batch.
    def on_train_batch_end(self, batch, logs=None):
        if not first:
            first.append(time.time() - started)

flags.FLAGS(["train.py", *sys.argv[4:], "--output_dir=" + out, "--verbose=0", "--notensorboard"])
with tfds.testing.mock_data(num_examples=n):
    metrics = run(train.config_from_flags(), [FirstStep()])
print(json.dumps({"first_step_seconds": first[0], "train_seconds": metrics["train_seconds"],
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "validation_examples": metrics["validation"]["n_examples"],
                  "test_examples": metrics["test"]["n_examples"]}))
"""

# One run of apps/evaluate.py's flags under mock data, on n test examples.
_ONE_EVALUATION = r"""
import importlib.util, json, os, resource, sys
import tensorflow_datasets as tfds
from absl import flags
root, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("evaluate_app", os.path.join(root, "apps", "evaluate.py"))
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)
flags.FLAGS(["evaluate.py", *sys.argv[4:], "--n_examples=" + str(n),
             "--output_dir=" + os.path.join(out, "eval"), "--verbose=0"])
with tfds.testing.mock_data(num_examples=n):
    evaluate.main()
result = {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if os.path.exists(os.path.join(out, "eval", "report.json")):
    report = json.load(open(os.path.join(out, "eval", "report.json")))
    result.update(test_examples=report["settings"]["n"], chunks=report["settings"]["chunks"])
else:  # --suite=none: the corruption benchmark alone.
    report = json.load(open(os.path.join(out, "eval", "corruptions.json")))
    result.update(test_examples=report["n_per_config"][0])
print(json.dumps(result))
"""


def one_run(n: int, run_flags: list) -> dict:
    """A fresh process running the app on `n` mock examples; its timings and memory."""
    script = _ONE_RUN if _APP.value == "train" else _ONE_EVALUATION
    with tempfile.TemporaryDirectory() as out:
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-c", script, ROOT, str(n), os.path.join(out, "run"), *run_flags],
            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall_seconds"] = time.time() - started
    return result


def main(argv):
    run_flags = RUN_FLAGS[_APP.value] + list(argv[1:])
    models = tempfile.TemporaryDirectory()
    if _APP.value == "evaluate":
        from he_keras.models import build_model

        model = os.path.join(models.name, "model.keras")
        build_model("small_cnn", (224, 224, 3), 10, head="he", s=15.0).save(model)
        run_flags.append("--model=" + model)
    sizes = [int(n) for n in _SIZES.value]
    runs: dict = {n: [] for n in sizes}
    for repeat in range(_REPEATS.value):
        for n in sizes if repeat % 2 == 0 else sizes[::-1]:
            runs[n].append(one_run(n, run_flags))
            print(f"  round {repeat + 1}, {n} examples: {json.dumps(runs[n][-1])}", flush=True)
    print(f"apps/{_APP.value}.py {' '.join(run_flags)} on tfds mock data, {_REPEATS.value} interleaved "
          f"rounds (median), load {os.getloadavg()[0]:.2f}:")
    medians = {}
    for n in sizes:
        medians[n] = {key: statistics.median(r[key] for r in runs[n]) for key in runs[n][0]}
        m = medians[n]
        if _APP.value == "train":
            detail = (f"first step done at {m['first_step_seconds']:.1f} s, peak RSS {m['max_rss_mb']:.0f} MB, "
                      f"validation {m['validation_examples']:.0f} / test {m['test_examples']:.0f} examples")
        else:
            detail = f"peak RSS {m['max_rss_mb']:.0f} MB, {m['test_examples']:.0f} test examples" + (
                f" in {m['chunks']:.0f} chunks" if "chunks" in m else "")
        print(f"  {n:>7} examples: wall {m['wall_seconds']:.1f} s, {detail}")
    base = medians[sizes[0]]
    for n in sizes[1:]:
        print(f"  {n} / {sizes[0]}: wall {medians[n]['wall_seconds'] / base['wall_seconds']:.2f}x, "
              f"peak RSS {medians[n]['max_rss_mb'] / base['max_rss_mb']:.2f}x")
    models.cleanup()
    if _OUTPUT.value:
        from he_keras.files import write_json

        write_json(_OUTPUT.value, {"flags": run_flags, "runs": runs, "medians": medians})


if __name__ == "__main__":
    app.run(main)
