"""The benchmarks' own input checks (they are run by hand, not by the suite)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_time_to_robust_refuses_a_models_dir_that_holds_runs(tmp_path):
    """apps/train.py would resume a finished run found there and time
    nothing: one `error:` line, exit 2, the directory left as it was."""
    models = tmp_path / "models"
    (models / "0" / "keras-0").mkdir(parents=True)
    (models / "split.npz").write_bytes(b"earlier")
    done = subprocess.run(
        [sys.executable, "bench/time_to_robust.py", f"--models_dir={models}", "--seeds=0", "--noautoattack",
         f"--torch_python={sys.executable}", "--", "--epochs=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --models_dir={models} is not empty; give a new or empty directory"], done.stderr
    assert sorted(os.listdir(models)) == ["0", "split.npz"] and os.listdir(models / "0") == ["keras-0"]
    assert (models / "split.npz").read_bytes() == b"earlier"
