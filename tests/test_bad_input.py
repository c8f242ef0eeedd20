"""The bad-input matrix over the apps and the public Python API.

Every row feeds one kind of bad input and expects a clear message naming the
problem, a non-zero exit (apps) or a `ValueError` (API), no traceback, no
training started, and nothing created, changed or deleted in the
directories the call could write to.

The app rows run as processes, two at a time, in one module fixture (each
in a workspace of its own holding copies of a finished run, an export and an
evaluation), so selecting a single app row still runs them all. Each row is
its own process running the app from its first line, forked from a server
that has imported TensorFlow once (`forkrun`), instead of paying that import
in every row's process.
"""

import concurrent.futures
import json
import os
import shutil

import keras
import numpy as np
import pytest

import forkrun
from he_keras import export
from he_keras.attacks import ProjectedGradientAttack
from he_keras.evaluation import evaluate
from he_keras.models import build_model
from he_keras.models.io import load_model
from he_keras.training import PGDAT
from he_keras.runs import TrainConfig, run
from he_keras.validation import validate_images, validate_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Flags that make any training that wrongly starts short.
TRAIN = [
    "--dataset=digits", "--n_train=64", "--epochs=1", "--steps=1", "--step_size=0.3",
    "--n_eval=16", "--eval_steps=1", "--verbose=2", "--output_dir={run}",
]
EVALUATE = ["--dataset=digits", "--n_examples=16", "--verbose=0", "--output_dir={eval}"]

# (app, case, arguments, words the message must contain). Placeholders:
# {run}, {serving}, {eval} are the workspace's copies of a finished run, an
# export with version 1 and an evaluation; {fresh} does not exist yet (it must
# not be created); {file} is a plain file; {good},
# {corrupted}, {truncated}, {lambda} are .keras files; {bad_json} a truncated
# JSON file; {linear_metrics} the metrics.json of a linear-head run.
APP_ROWS = [
    ("train", "eps_above_1", [*TRAIN, "--eps=1.5"], "`eps` must be in [0, 1.0]. Received: eps=1.5"),
    ("train", "negative_steps", [*TRAIN, "--steps=-3"], "`steps` must be >= 1. Received: steps=-3"),
    ("train", "eps_warmup_beyond_epochs", [*TRAIN, "--output_dir={fresh}", "--eps_warmup_epochs=5"],
     "`eps_warmup_epochs` must be in [0, epochs). Received: eps_warmup_epochs=5.0"),
    ("train", "steps_per_execution_with_eps_warmup",
     [*TRAIN, "--output_dir={fresh}", "--steps_per_execution=2", "--eps_warmup_epochs=0.5"],
     "steps_per_execution > 1 would skip"),
    # 64 examples less a 10 % validation split, in batches of 64: one step per epoch.
    ("train", "steps_per_execution_not_dividing_the_epoch",
     [*TRAIN, "--output_dir={fresh}", "--steps_per_execution=2"],
     "`steps_per_execution` must divide the 1 training steps per epoch"),
    ("train", "unknown_flag", [*TRAIN, "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    ("train", "output_dir_is_file", [*TRAIN, "--output_dir={file}"], "exists and is not a directory"),
    ("train", "nonexistent_data_dir", [*TRAIN, "--data_dir={missing}"], "`data_dir` does not exist"),
    ("train", "resume_with_other_settings", [*TRAIN, "--eps=0.2"], "other settings: eps=0.3 (now 0.2)"),
    ("train", "noresume_over_a_run", [*TRAIN, "--noresume"], "--noresume would overwrite it"),
    ("train", "truncated_metrics_json", [*TRAIN, "--output_dir={run_bad_metrics}"], "not valid JSON"),
    ("train", "nonexistent_helper_model",
     [*TRAIN, "--output_dir={fresh}", "--framework=hat", "--helper_model={missing}"],
     "`helper_model`: Model file not found"),
    ("train", "truncated_helper_model",
     [*TRAIN, "--output_dir={fresh}", "--framework=hat", "--helper_model={truncated}"],
     "could not be loaded: not a valid .keras archive (corrupted or truncated file)"),
    ("train", "lambda_helper_model",
     [*TRAIN, "--output_dir={fresh}", "--framework=hat", "--helper_model={lambda}"], "Lambda"),
    ("train", "nonexistent_init_model", [*TRAIN, "--output_dir={fresh}", "--init_model={missing}"],
     "`init_model`: Model file not found"),
    ("train", "truncated_init_model", [*TRAIN, "--output_dir={fresh}", "--init_model={truncated}"],
     "`init_model`: "),
    ("train", "init_model_of_another_head", [*TRAIN, "--output_dir={fresh}", "--head=linear", "--init_model={good}"],
     "does not fit the configured model"),
    ("evaluate", "nonexistent_model", [*EVALUATE, "--model={missing}"], "does not exist"),
    ("evaluate", "corrupted_keras", [*EVALUATE, "--model={corrupted}"], "could not be loaded"),
    ("evaluate", "truncated_keras", [*EVALUATE, "--model={truncated}"],
     "could not be loaded: not a valid .keras archive (corrupted or truncated file)"),
    ("evaluate", "lambda_keras", [*EVALUATE, "--model={lambda}"], "Lambda"),
    ("evaluate", "output_dir_is_file", [*EVALUATE, "--model={good}", "--output_dir={file}"], "is a file"),
    ("evaluate", "eps_above_1", [*EVALUATE, "--model={good}", "--eps=1.5"], "--eps must lie in (0, 1]"),
    ("evaluate", "empty_dataset", [*EVALUATE, "--model={good}", "--n_examples=0"], "--n_examples must be >= 1"),
    ("evaluate", "negative_batch_size", [*EVALUATE, "--model={good}", "--batch_size=-4"],
     "--batch_size must be >= 1"),
    ("evaluate", "unknown_flag", [*EVALUATE, "--model={good}", "--no_such_flag=1"], "no_such_flag"),
    ("evaluate", "missing_model_flag", EVALUATE, "--model"),
    ("evaluate", "unexpected_argument", [*EVALUATE, "--model={good}", "extra"], "unexpected arguments ['extra']"),
    ("train", "unexpected_argument", [*TRAIN, "extra"], "unexpected arguments ['extra']"),
    ("evaluate", "unknown_corruption", [*EVALUATE, "--model={good}", "--corruptions=fog,fogg"],
     "Unknown corruption 'fogg'. Expected one of gaussian_noise, shot_noise"),
    ("evaluate", "severity_6", [*EVALUATE, "--model={good}", "--corruptions=fog", "--severities=1,6"],
     "`severities` must be a comma list of integers in 1-5. Received: severities='1,6'"),
    ("evaluate", "severity_0", [*EVALUATE, "--model={good}", "--corruptions=all", "--severities=0"],
     "Received: severities='0'"),
    ("evaluate", "corruption_for_colour_on_grey", [*EVALUATE, "--model={good}", "--corruptions=saturate"],
     "--dataset=digits: Corruption 'saturate' does not apply: saturate needs images with 3 channels"),
    ("evaluate", "tfds_corruptions_of_digits",
     [*EVALUATE, "--model={good}", "--corruptions=all", "--corruption_source=tfds"],
     "No tfds corrupted version of this dataset. Expected one of ['cifar10', 'imagenet2012']. "
     "Received: dataset='digits'"),
    ("evaluate", "suite_none_without_corruptions", [*EVALUATE, "--model={good}", "--suite=none"],
     "--suite=none runs no attack: pass --corruptions"),
    ("evaluate", "reference_without_corruptions", [*EVALUATE, "--model={good}", "--reference_model={good}"],
     "--reference_model is only read by the corruption benchmark"),
    ("evaluate", "nonexistent_reference_model",
     [*EVALUATE, "--model={good}", "--corruptions=fog", "--reference_model={missing}"],
     "--reference_model: Model file not found"),
    ("export", "nonexistent_model", ["--model={missing}", "--output_dir={serving}"], "Model file not found"),
    ("export", "corrupted_keras", ["--model={corrupted}", "--output_dir={serving}"],
     "(corrupted or not a he_keras model)"),
    ("export", "truncated_keras", ["--model={truncated}", "--output_dir={serving}"],
     "could not be loaded: not a valid .keras archive (corrupted or truncated file)"),
    ("export", "lambda_keras", ["--model={lambda}", "--output_dir={serving}"], "Refusing to load"),
    ("export", "output_dir_is_file", ["--model={good}", "--output_dir={file}"], "is not a directory"),
    ("export", "existing_version", ["--model={good}", "--output_dir={serving}", "--version=1"],
     "Version 1 already exists"),
    ("export", "version_zero", ["--model={good}", "--output_dir={serving}", "--version=0"], "--version"),
    ("export", "truncated_metrics_json", ["--model={good}", "--output_dir={serving}", "--metrics={bad_json}"],
     "not valid JSON"),
    ("export", "metrics_of_another_head", ["--model={good}", "--output_dir={serving}",
                                           "--metrics={linear_metrics}"], "head='linear'"),
    ("export", "nonexistent_report", ["--model={good}", "--output_dir={serving}", "--report={missing}"],
     "does not exist"),
    ("export", "missing_model_flag", ["--output_dir={serving}"], "--model"),
    ("export", "unknown_flag", ["--model={good}", "--output_dir={serving}", "--no_such_flag=1"], "no_such_flag"),
]


def _snapshot(directory):
    """Every file below `directory` with its size and modification time."""
    found = {}
    for parent, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(parent, name)
            stat = os.stat(path)
            found[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _tiny_run(output_dir, head):
    config = TrainConfig(
        n_train=64, epochs=1, steps=1, step_size=0.3, n_eval=16, eval_steps=1,
        head=head, output_dir=output_dir, verbose=0,
    )
    run(config)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Read-only inputs: a finished run, an export, good and bad files."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {name: str(root / name) for name in ("run", "linear_run", "serving", "eval")}
    paths["root"] = str(root)
    _tiny_run(paths["run"], "he")
    _tiny_run(paths["linear_run"], "linear")
    paths["good"] = os.path.join(paths["run"], "model.keras")
    paths["linear_metrics"] = os.path.join(paths["linear_run"], "metrics.json")
    export.export_saved_model(load_model(paths["good"]), paths["serving"])
    os.makedirs(paths["eval"])
    with open(os.path.join(paths["eval"], "report.json"), "w") as f:
        json.dump({"clean_accuracy": 1.0}, f)

    good = open(paths["good"], "rb").read()
    corrupted = bytearray(good)
    middle = len(good) // 2
    corrupted[middle : middle + 4096] = np.random.default_rng(0).bytes(4096)
    files = {
        "corrupted": bytes(corrupted),
        "truncated": good[: len(good) // 2],
    }
    for name, data in files.items():
        paths[name] = str(root / f"{name}.keras")
        with open(paths[name], "wb") as f:
            f.write(data)
    image = keras.Input((8, 8, 1))
    scaled = keras.layers.Lambda(lambda t: 2.0 * t - 1.0)(image)
    paths["lambda"] = str(root / "lambda.keras")
    keras.Model(image, build_model("small_cnn", (8, 8, 1), 10)(scaled)).save(paths["lambda"])
    paths["bad_json"] = str(root / "bad.json")
    with open(paths["bad_json"], "w") as f:
        f.write(open(os.path.join(paths["run"], "metrics.json")).read()[:100])
    paths["missing"] = str(root / "does_not_exist.keras")
    return paths


def _workspace(directory, inputs):
    """Copies of everything a row may write to, and their placeholders."""
    paths = dict(inputs)
    for name in ("run", "serving", "eval"):
        paths[name] = str(directory / name)
        shutil.copytree(inputs[name], paths[name])
    paths["run_bad_metrics"] = str(directory / "run_bad_metrics")
    shutil.copytree(inputs["run"], paths["run_bad_metrics"])
    shutil.copy(inputs["bad_json"], os.path.join(paths["run_bad_metrics"], "metrics.json"))
    paths["fresh"] = str(directory / "fresh")
    paths["file"] = str(directory / "a_file")
    with open(paths["file"], "w") as f:
        f.write("not a directory\n")
    return paths


@pytest.fixture(scope="module")
def app_results(tmp_path_factory, inputs):
    """Runs every app row; maps (app, case) to (process, files before, after)."""
    root = tmp_path_factory.mktemp("apps")
    inputs_before = _snapshot(inputs["root"])

    def run_row(row):
        app, case, args, _ = row
        directory = root / f"{app}-{case}"
        directory.mkdir()
        paths = _workspace(directory, inputs)
        before = _snapshot(directory)
        proc = forkrun.run(
            [os.path.join(ROOT, "apps", f"{app}.py"), *(a.format(**paths) for a in args)],
            timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        return (app, case), (proc, before, _snapshot(directory))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(run_row, APP_ROWS))
    results["inputs"] = (inputs_before, _snapshot(inputs["root"]))
    return results


@pytest.mark.parametrize("app,case,args,message", APP_ROWS, ids=[f"{r[0]}-{r[1]}" for r in APP_ROWS])
def test_app_rejects_bad_input(app_results, app, case, args, message):
    proc, before, after = app_results[(app, case)]
    # One `error:` line naming the value (TensorFlow may log before it), exit status 2.
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Epoch" not in proc.stdout  # no training started
    assert after == before  # nothing created, changed or deleted


def test_app_rows_leave_their_inputs_untouched(app_results):
    before, after = app_results["inputs"]
    assert after == before


# === The public Python API ===

IMAGES = np.full((4, 8, 8, 1), 0.5, "float32")


def _with(value, index=(0, 0, 0, 0)):
    x = IMAGES.copy()
    x[index] = value
    return x


BAD_IMAGES = [
    ("nan", _with(np.nan), "non-finite values (NaN/inf); first in example 0"),
    ("inf", _with(np.inf, (2, 1, 1, 0)), "non-finite values (NaN/inf); first in example 2"),
    ("wrong_rank", IMAGES[..., 0], "must have rank 4"),
    ("wrong_channels", np.full((4, 8, 8, 3), 0.5, "float32"), "(axis 3 is 3, expected 1)"),
    ("above_one", _with(1.5), "must lie in [0, 1] (pixel units). Received min=0.5, max=1.5"),
    ("negative", _with(-0.25), "must lie in [0, 1] (pixel units). Received min=-0.25"),
    ("empty", IMAGES[:0], "is empty (0 examples)"),
]


@pytest.mark.parametrize("case,x,message", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_validate_images_names_the_problem(case, x, message):
    with pytest.raises(ValueError) as err:
        validate_images(x, expected_shape=(8, 8, 1))
    assert message in str(err.value)


@pytest.fixture(scope="module")
def classifier():
    return build_model("small_cnn", (8, 8, 1), 10, head="he")


# The suite checks shapes against the model itself (Keras names the mismatch).
SUITE_IMAGES = [
    (case, x, "(4, 8, 8, 3)" if case == "wrong_channels" else message)
    for case, x, message in BAD_IMAGES
]


@pytest.mark.parametrize("case,x,message", SUITE_IMAGES, ids=[c[0] for c in SUITE_IMAGES])
def test_evaluation_suite_rejects_bad_images(classifier, case, x, message):
    with pytest.raises(ValueError) as err:
        evaluate(classifier, x, np.zeros(len(x), "int32"), 10)
    assert message in str(err.value)


@pytest.mark.parametrize("labels", [[0, 1, 2, 10], [0, -1, 2, 3]], ids=["ten", "negative"])
def test_labels_out_of_range(classifier, labels):
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 10\)"):
        validate_labels(labels, 10)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 10\)"):
        evaluate(classifier, IMAGES, labels, 10)


@pytest.mark.parametrize(
    "make",
    [
        lambda model: PGDAT(model, eps=1.5, step_size=0.1, steps=1),
        lambda model: ProjectedGradientAttack(eps=1.5, step_size=0.1, steps=1),
        lambda model: evaluate(model, IMAGES, np.zeros(4, "int32"), 10, eps=1.5),
        lambda model: TrainConfig(eps=1.5).validate(),
    ],
    ids=["trainer", "attack", "evaluate", "train_config"],
)
def test_eps_above_one(classifier, make):
    with pytest.raises(ValueError, match="eps"):
        make(classifier)


@pytest.mark.parametrize(
    "make",
    [
        lambda model: PGDAT(model, eps=0.1, step_size=0.1, steps=-2),
        lambda model: ProjectedGradientAttack(eps=0.1, step_size=0.1, steps=-2),
        lambda model: TrainConfig(steps=-2).validate(),
    ],
    ids=["trainer", "attack", "train_config"],
)
def test_negative_steps(classifier, make):
    with pytest.raises(ValueError, match="`steps` must be"):
        make(classifier)


@pytest.mark.parametrize("name", ["missing", "corrupted", "truncated", "lambda"])
def test_load_model_names_the_problem(inputs, name):
    expected = {
        "missing": "Model file not found",
        "corrupted": r"\(corrupted or not a he_keras model\)",
        "truncated": "corrupted or truncated",
        "lambda": "Lambda layer",
    }[name]
    with pytest.raises(ValueError, match=expected):
        load_model(inputs[name])


def test_train_config_paths(tmp_path):
    not_a_dir = tmp_path / "a_file"
    not_a_dir.write_text("keep me\n")
    with pytest.raises(ValueError, match="not a directory"):
        TrainConfig(output_dir=str(not_a_dir)).validate()
    with pytest.raises(ValueError, match="`data_dir` does not exist"):
        TrainConfig(data_dir=str(tmp_path / "nope"), output_dir=str(tmp_path / "out")).validate()
    assert not_a_dir.read_text() == "keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_steps_per_execution_is_refused_where_a_loop_runs_one_step_per_call(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="multi-worker loop runs one step per call"):
        TrainConfig(steps_per_execution=2, strategy="multi_worker", output_dir=out).validate()
    with pytest.raises(ValueError, match="`steps_per_execution` must be >= 1"):
        TrainConfig(steps_per_execution=0, output_dir=out).validate()
    TrainConfig(steps_per_execution=2, strategy="mirrored", output_dir=out).validate()
    assert not os.path.exists(out)


def test_export_never_overwrites(inputs, classifier, tmp_path):
    serving = tmp_path / "serving"
    shutil.copytree(inputs["serving"], serving)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="Version 1 already exists"):
        export.export_saved_model(classifier, str(serving), version=1)
    with pytest.raises(ValueError, match="not a directory"):
        export.export_saved_model(classifier, str(a_file))
    with pytest.raises(ValueError, match="`version` must be an integer >= 1"):
        export.export_saved_model(classifier, str(serving), version=-1)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "x,y",
    [(_with(np.nan), np.zeros(4, "int32")), (IMAGES, np.array([0, 1, 2, 10]))],
    ids=["nan_images", "labels_out_of_range"],
)
def test_trainer_fit_rejects_bad_arrays(classifier, x, y):
    trainer = PGDAT(classifier, eps=0.1, step_size=0.1, steps=1)
    trainer.compile(optimizer="adam")
    with pytest.raises(ValueError, match="NaN|labels"):
        trainer.fit(x, y, verbose=0)
