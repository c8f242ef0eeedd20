"""`make experiments QUICK=1`: the study's whole pipeline at toy size, and its resumability."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import stats  # noqa: E402
import study  # noqa: E402


def run_quick(out, doc):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run_study.py"), "--quick", "--workers=1",
         "--results", str(out), "--doc", str(doc)],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_quick_study_trains_evaluates_decides_renders_and_resumes(tmp_path):
    out, doc = tmp_path / "results", tmp_path / "REPRODUCTION.md"
    run_quick(out, doc)
    units = sorted((out / "digits").glob("*/seed*.json"))
    assert len(units) == 2 * study.QUICK_SEEDS  # PGD-AT and PGD-AT+HE, every seed
    for path in units:
        record = json.loads(path.read_text())
        points = record["eval"]["points"]
        assert len(points["clean"]) == study.QUICK_N_TEST == record["eval"]["settings"]["n"]
        # AutoAttack-standard ran complete, on the logits and (HE) on logits / s.
        chains = {a["chain"] for a in record["eval"]["attacks"] if a["chain"]}
        assert chains == ({"AutoAttack-standard", "AutoAttack-standard on logits / s"}
                          if record["arm"].endswith("_he") else {"AutoAttack-standard"})
        assert {"PGD-20", "APGD-DLR", "Square"} <= set(points["survivors"])
        # Trained by the library's runner (its metrics and checkpoints).
        run_dir = out / "runs" / "digits" / record["arm"] / f"seed{record['seed']}"
        assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints").is_dir()
        assert len(record["train"]["history"]["val_adv_accuracy"]) == record["spec"]["epochs"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["claims"], summary
    for record in summary["claims"]:
        assert stats.check_record(record, {"digits": study.QUICK_N_TEST}) == []
    text = doc.read_text()
    assert "QUICK mode" in text
    assert all(f"`{p['id']}`" in text for p in summary["pending"])
    assert sum(f"**{r['verdict']}**" in text for r in summary["claims"]) >= 1
    # A second run finds every unit done: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in units}
    log = run_quick(out, doc)
    assert "trained" not in log
    assert {p: p.stat().st_mtime_ns for p in units} == stamps
