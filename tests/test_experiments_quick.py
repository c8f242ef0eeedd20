"""`make experiments QUICK=1`: the study's whole pipeline at toy size, and its resumability."""

import json
import os
import shutil

import pytest

import forkrun

from he_keras.models.io import load_model

from experiments import analyses, arms, stats, workers
from experiments import units as unit_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A guard against a hung study, not a speed test: a quick study takes about
# 4.5 minutes inside the suite here, twice that while another suite shares the cores.
TIMEOUT = 1800


def run_quick(out, doc):
    proc = forkrun.run(
        ["-m", "experiments.run_study", "--quick", "--workers=2",
         "--results", str(out), "--doc", str(doc)], timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """`(results, doc)` of one quick study run (the tests below copy before they change it)."""
    root = tmp_path_factory.mktemp("quick")
    out, doc = root / "results", root / "REPRODUCTION.md"
    run_quick(out, doc)
    return out, doc


def test_quick_study_trains_evaluates_decides_renders_and_resumes(quick_study):
    out, doc = quick_study
    units = sorted((out / "digits").glob("*/seed*.json"))
    assert len(units) == 3 * arms.QUICK_SEEDS  # PGD-AT, PGD-AT+HE and standard, every seed
    for path in units:
        record = json.loads(path.read_text())
        points = record["eval"]["points"]
        assert len(points["clean"]) == arms.QUICK_N_TEST == record["eval"]["settings"]["n"]
        # AutoAttack-standard ran complete, on the logits and (HE) on logits / s.
        chains = {a["chain"] for a in record["eval"]["attacks"] if a["chain"]}
        assert chains == ({"AutoAttack-standard", "AutoAttack-standard on logits / s"}
                          if record["arm"].endswith("_he") else {"AutoAttack-standard"})
        assert {"PGD-20", "APGD-DLR", "Square"} <= set(points["survivors"])
        # At the quick budget, as each attack's config records it.
        budgets = {a["name"]: a["config"].get("steps", a["config"].get("n_queries"))
                   for a in record["eval"]["attacks"] if a["chain"] == "AutoAttack-standard"}
        assert budgets == {"APGD-CE": 10, "APGD-T": 10, "FAB-T": 10, "Square": 500}
        # Trained by the library's runner (its metrics and checkpoints).
        run_dir = out / "runs" / "digits" / record["arm"] / f"seed{record['seed']}"
        assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints").is_dir()
        assert len(record["train"]["history"]["val_adv_accuracy"]) == record["spec"]["epochs"]
        # The record names its model by the checksum of its weights.
        assert record["model"]["weights_sha256"] == unit_lib.weights_sha256(load_model(str(run_dir / "model.keras")))
        # PGD-AT units get margins along R0 (the standard model's directions)
        # and R1 (their own after epoch 1, from a replay that repeated the run).
        if record["arm"] == "pgdat":
            margins = record["margins"]
            assert margins["replay_matches_unit"] is True
            assert {"R0", "R1"} <= set(margins) and set(margins["initial"]) == {"R0", "R1"}
            assert len(margins["R0"]) == arms.QUICK_N_TEST
            assert len(record["class_weight_norms"]) == 10
        else:
            assert "margins" not in record and "class_weight_norms" not in record
        # Both PGD-AT arms are scored under the generated corruptions, on
        # the same corrupted images (one corruption seed for every unit).
        if record["arm"] == "standard":
            assert "corruptions" not in record
            continue
        corruptions = record["corruptions"]
        assert corruptions["seed"] == analyses.CORRUPTION_SEED and corruptions["severities"] == [1, 2, 3, 4, 5]
        assert len(corruptions["point_correct"]) == arms.QUICK_N_TEST
        assert sum(corruptions["point_correct"]) / corruptions["point_configs"] / arms.QUICK_N_TEST \
            == pytest.approx(corruptions["mCA"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["claims"], summary
    assert "table5-pgdat-mca" in {r["id"] for r in summary["claims"]}
    for record in summary["claims"]:
        assert stats.check_record(record, {"digits": arms.QUICK_N_TEST}) == []
    text = doc.read_text()
    assert "QUICK mode" in text
    assert "## Common corruptions" in text and "| **mCA** |" in text
    assert all(f"`{p['id']}`" in text for p in summary["pending"])
    assert sum(f"**{r['verdict']}**" in text for r in summary["claims"]) >= 1
    # A second run finds every unit done: nothing is trained or evaluated again.
    stamps = {p: p.stat().st_mtime_ns for p in units}
    log = run_quick(out, doc)
    assert "trained" not in log
    assert {p: p.stat().st_mtime_ns for p in units} == stamps


def test_a_study_with_nothing_pending_spawns_no_worker(quick_study, tmp_path, monkeypatch):
    """A spawned worker costs a TensorFlow import; a re-run that finds every
    unit complete must not start one, and one incomplete unit gets one worker."""
    import multiprocessing

    out = tmp_path / "results"
    shutil.copytree(quick_study[0], out, ignore=shutil.ignore_patterns("runs"))
    todo = arms.units("digits", ("standard", "pgdat", "pgdat_he"), arms.QUICK_SEEDS)
    assert workers.pending(todo, str(out)) == []

    def no_spawn(*args, **kwargs):
        raise AssertionError("a worker process was spawned")

    monkeypatch.setattr(multiprocessing, "get_context", no_spawn)
    assert workers.run_workers(todo, str(out), str(out / "runs"), quick=True, workers=2) == 0
    path = out / "digits" / "pgdat" / "seed1.json"
    record = json.loads(path.read_text())
    del record["class_weight_norms"]
    path.write_text(json.dumps(record))
    assert workers.pending(todo, str(out)) == [("digits", "pgdat", 1)]


def study_seed0(out, arm_names):
    """`experiments.study` on seed 0 of `arm_names` (quick sizes). The quick study trained
    its units in spawned worker processes (fresh interpreters), so a
    retraining here repeats a run made by an independent process."""
    proc = forkrun.run(
        ["-m", "experiments.study", "--quick", f"--arms={arm_names}",
         "--seeds=1", "--results", str(out), "--runs", str(out / "runs")], timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_missing_models_are_retrained_only_if_they_repeat_the_unit_and_fine_tuning_starts_from_them(
        quick_study, tmp_path):
    """A fresh clone has the unit JSONs but not `runs/`: margins need the
    models back. `pgdat_ft` (HAT Sec. 3) is PGD-AT started from the standard
    unit's model, which must be retrained first."""
    out = tmp_path / "results"
    shutil.copytree(quick_study[0], out)
    path = out / "digits" / "pgdat" / "seed0.json"
    record = json.loads(path.read_text())
    before = record.pop("margins")
    path.write_text(json.dumps(record))
    for arm in ("pgdat", "standard"):
        shutil.rmtree(out / "runs" / "digits" / arm / "seed0")
    log = study_seed0(out, "pgdat,pgdat_ft")
    assert log.count("model retrained, history identical") == 2, log
    # Retrained bit for bit; a model in runs/ whose weights are not the unit's is not used.
    logs = []
    assert unit_lib.regenerate(str(path), runs=str(out / "runs"), results=str(out), log=logs.append)
    other = dict(json.loads(path.read_text()), model={"weights_sha256": "0" * 64})
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(other))
    assert not unit_lib.regenerate(str(forged), runs=str(out / "runs"), results=str(out), log=logs.append)
    assert "weights checksum differs" in logs[-1]
    after = json.loads(path.read_text())["margins"]
    for key in ("R0", "R1", "initial"):
        assert after[key] == before[key]
    finetuned = json.loads((out / "digits" / "pgdat_ft" / "seed0.json").read_text())
    assert finetuned["spec"]["init_arm"] == "standard"
    metrics = json.loads((out / "runs" / "digits" / "pgdat_ft" / "seed0" / "metrics.json").read_text())
    assert metrics["config"]["init_model"] == str(out / "runs" / "digits" / "standard" / "seed0" / "model.keras")
    assert finetuned["margins"]["replay_matches_unit"] is True and "R1" in finetuned["margins"]["initial"]
    # A unit whose recorded history the retrained model does not repeat is
    # not given margins from it.
    record = json.loads(path.read_text())
    del record["margins"], record["corruptions"]
    record["train"]["history"]["val_adv_accuracy"][0] += 0.01
    path.write_text(json.dumps(record))
    shutil.rmtree(out / "runs" / "digits" / "pgdat" / "seed0")
    log = study_seed0(out, "pgdat")
    assert "does not repeat the unit's history" in log, log
    record = json.loads(path.read_text())
    assert "margins" not in record
    assert not (out / "runs" / "digits" / "pgdat" / "seed0").exists()
    # The corruption benchmark needs a model of the arm and seed, not the
    # unit's own: it ran on a retraining, says so, and kept it apart.
    provenance = record["corruptions"]["model"]
    assert provenance["retrained"] is True
    assert provenance["history_max_difference"] == pytest.approx(0.01, abs=1e-6)
    assert len(record["corruptions"]["point_correct"]) == arms.QUICK_N_TEST
    assert sorted(os.listdir(out / "runs" / "digits" / "pgdat")) == ["seed0.retrained", "seed1", "seed2"]
    # A benchmark that no longer matches the corruptions that apply runs
    # again, on the kept retraining: nothing is trained a second time.
    record["corruptions"]["accuracy"].pop("fog")
    record["margins"] = before  # (margins are not what this checks)
    path.write_text(json.dumps(record))
    assert analyses.corruptions_missing(str(path))
    log = study_seed0(out, "pgdat")
    assert "corruptions on the kept retraining" in log and "retrained for the corruptions" not in log, log
    record = json.loads(path.read_text())
    assert record["corruptions"]["model"] == provenance and "fog" in record["corruptions"]["accuracy"]
    assert not analyses.corruptions_missing(str(path))
