"""apps/evaluate.py end to end, in processes of its own, and its input validation."""

import json
import os
import shutil

import pytest

import forkrun
from helpers import accuracy, digits_arrays, undefended_digits_model
from he_keras.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "evaluate.py")


def run_app(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return forkrun.run([APP, *args], timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "undefended.keras")
    undefended_digits_model().save(path)
    return path


def test_quick_suite_end_to_end(saved_model, tmp_path):
    # Without --output_dir the reports go to eval/ beside the model (as `make run` puts them).
    (tmp_path / "run").mkdir()
    model = shutil.copy(saved_model, tmp_path / "run" / "model.keras")
    out = tmp_path / "run" / "eval"
    proc = run_app(
        f"--model={model}", "--suite=quick", "--n_examples=64", "--eps=0.3", "--seed=3", "--verbose=0",
        "--chunk_size=24",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"files to {out}" in proc.stdout
    files = set(os.listdir(out))
    assert {"report.json", "report.md", "accuracy_vs_steps.png"} <= files
    assert not [f for f in files if f.startswith(".tmp")]
    report = json.loads((out / "report.json").read_text())
    _, _, x, y = digits_arrays()
    # 64 points read 24 at a time: three chunks, every point counted once.
    assert report["settings"]["n"] == 64 and report["settings"]["seed"] == 3
    assert report["settings"]["chunks"] == 3
    assert report["clean_accuracy"] == pytest.approx(accuracy(undefended_digits_model(), x[:64], y[:64]))
    assert report["n_clean_correct"] == round(64 * report["clean_accuracy"])
    names = [a["name"] for a in report["attacks"]]
    assert names[:2] == ["FGSM", "PGD-20"] and len(names) == 5
    for attack in report["attacks"]:
        assert attack["config"] and attack["n_outside_ball"] == 0
        assert report["robust_accuracy"] <= attack["accuracy"] <= report["clean_accuracy"]
    cumulative = [a["cumulative_accuracy"] for a in report["attacks"]]
    assert cumulative == sorted(cumulative, reverse=True) and cumulative[-1] == report["robust_accuracy"]
    assert report["robust_accuracy"] < 0.1
    md = (out / "report.md").read_text()
    assert f"**{100 * report['robust_accuracy']:.2f}**" in md
    assert "worst case (all attacks)" in proc.stdout


@pytest.fixture(scope="module")
def mnist_shaped_model(tmp_path_factory):
    """A SavedModel (Keras export, `serve` endpoint) taking 28x28 images."""
    path = str(tmp_path_factory.mktemp("mnist") / "mnist_shaped")
    build_model("small_cnn", (28, 28, 1), 10).export(path, format="tf_saved_model", verbose=False)
    return path


@pytest.mark.parametrize(
    "case",
    ["missing_model", "eps_2", "n_examples_0", "chunk_size_0", "output_is_file", "unknown_flag",
     "shape_mismatch"],
)
def test_bad_inputs_exit_nonzero_naming_the_value_and_write_nothing(
    case, saved_model, mnist_shaped_model, tmp_path
):
    out = tmp_path / "eval"
    args = {
        "missing_model": ([f"--model={tmp_path}/nope.keras"], "nope.keras"),
        "eps_2": (["--eps=2"], "--eps=2"),
        "n_examples_0": (["--n_examples=0"], "--n_examples=0"),
        "chunk_size_0": (["--chunk_size=0"], "--chunk_size=0"),
        "output_is_file": ([], "is a file"),
        "unknown_flag": (["--no_such_flag=1"], "no_such_flag"),
        "shape_mismatch": ([f"--model={mnist_shaped_model}"], "(28, 28, 1)"),
    }[case]
    extra, needle = args
    if case == "output_is_file":
        out = tmp_path / "a_file"
        out.write_text("keep me")
    base = [f"--model={saved_model}", f"--output_dir={out}", "--n_examples=8", "--verbose=0"]
    proc = run_app(*base, *extra)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr[-2000:]
    if case == "output_is_file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == (["a_file"] if case == "output_is_file" else [])


def test_corruption_benchmark_end_to_end(saved_model, tmp_path):
    out = tmp_path / "eval"
    proc = run_app(
        f"--model={saved_model}", "--corruptions=all", "--suite=none", "--severities=1,5",
        "--n_examples=48", f"--reference_model={saved_model}", "--seed=4", f"--output_dir={out}",
        "--verbose=0", "--chunk_size=20",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["corruption_heatmap.png", "corruptions.json", "corruptions.md"]
    result = json.loads((out / "corruptions.json").read_text())
    assert result["source"] == "generated" and result["seed"] == 4 and result["n_per_config"] == [48]
    assert len(result["accuracy"]) == 16
    assert sorted(result["not_applicable"]) == ["defocus_blur", "gaussian_blur", "saturate"]
    # The model against itself (two loaded copies): the same accuracies but for
    # a prediction that round-off might flip, so an mCE of 1 within one flip.
    for name, by_severity in result["accuracy"].items():
        reference = result["reference"]["accuracy"][name]
        assert all(abs(by_severity[s] - reference[s]) < 1.5 / 48 for s in ("1", "5")), name
    assert result["mCE"] == pytest.approx(1.0, abs=0.1)
    assert f"mCA (14 benchmark corruptions): {100 * result['mCA']:.2f}" in proc.stdout
    assert "glass_blur" in proc.stdout and "sev 5" in proc.stdout
