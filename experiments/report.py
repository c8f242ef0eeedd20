"""Writes `summary.json` and renders `docs/REPRODUCTION.md` and the README's summary line.

Nothing in the document is typed by hand: each verdict, effect and interval
comes from `summary.json` (`claims.decide_all`), each arm number from the unit
JSONs of `study.py`, each time from their recorded wall clocks. The README line
sits between `README_BEGIN` and `README_END` and is replaced in place.
"""

from __future__ import annotations

import glob
import math
import os
import time
from typing import Optional, Sequence

import numpy as np

from he_keras.defaults import PROBE_STEP_FRACTION
from he_keras.files import read_json, write_atomic, write_json

from experiments import analyses, arms, claims, health, lifecycle, outcomes, protocol, stats

README_BEGIN = "<!-- study-summary:begin -->"
README_END = "<!-- study-summary:end -->"
ARM_METRICS = ("clean", "PGD-20", "AutoAttack", "scale-invariant")
CALIBRATION_PNG = "../experiments/results/calibration/calibration.png"


def log_invocation(results: str, started: float, finished: Optional[float] = None,
                   index: Optional[int] = None) -> int:
    """Records one `run_study.py` invocation in `invocations.json`; returns its index.

    Called at the start (no end yet: a killed invocation stays recorded as
    unfinished) and again at the end with its index.
    """
    path = os.path.join(results, "invocations.json")
    entries = read_json(path, "study invocations")["invocations"] if os.path.exists(path) else []
    entry = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
             "wall_seconds": None if finished is None else round(finished - started, 1)}
    if index is None:
        entries.append(entry)
        index = len(entries) - 1
    else:
        entries[index] = entry
    write_json(path, {"invocations": entries})
    return index


def write_summary(results: str, records: Sequence[dict], pending: Sequence[dict],
                  problems: Sequence[str] = (), failed_units: Sequence[dict] = ()) -> str:
    """`<results>/summary.json`: the decided records (`stats.SUMMARY_FIELDS` and more),
    the pending claims, any broken rule (`claims.check`) and every failed unit
    (`health`: the unit and the rules it broke)."""
    path = os.path.join(results, "summary.json")
    write_json(path, {"format": "he_keras.study-summary/2", "claims": list(records),
                      "pending": list(pending), "problems": list(problems),
                      "failed_units": list(failed_units)})
    return path


def _pct(values: Sequence[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _arm_rows(units: dict) -> list:
    rows = []
    for arm, by_seed in units.items():
        records = [by_seed[s] for s in sorted(by_seed)]
        cells = []
        for metric in ARM_METRICS:
            cells.append(_pct([outcomes.outcome(r, metric).mean() for r in records]))
        if any("PGD-20 (logits/s)" in r["eval"]["points"]["survivors"] for r in records):
            raw = _pct([outcomes.outcome(r, "PGD-20 (logits/s)").mean() for r in records])
        else:
            raw = "—"
        changes = [c for c in (claims.unit_trend(r) for r in records) if c is not None]
        plateau = (f"{np.mean(changes):+.1f} (|·| {np.mean(np.abs(changes)):.1f}, max {max(abs(c) for c in changes):.1f})"
                   + ("" if stats.converged([claims.arm_trend(by_seed)]) else " **not converged**")
                   if changes else "—")
        train = np.median([r["train"]["wall_seconds"] for r in records]) / 60
        evaluation = np.median([r["eval_wall_seconds"] for r in records]) / 60
        rows.append([arm, str(len(records)), *cells[:2], raw, *cells[2:], plateau,
                     f"{train:.1f} / {evaluation:.1f}"])
    return rows


def validation_figure(results: str, dataset: str, units: dict,
                      arm_names: Sequence[str] = ("pgdat", "pgdat_he")) -> str:
    """`<results>/<dataset>_validation.png`: validation PGD-10 accuracy per epoch, one line per unit."""
    # Here, not at the top: the headless backend is chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for arm, color in zip(arm_names, ("tab:blue", "tab:orange")):
        for i, (seed, record) in enumerate(sorted(units.get(arm, {}).items())):
            values = 100 * np.asarray(record["train"]["history"].get("val_adv_accuracy", []))
            ax.plot(np.arange(1, len(values) + 1), values, color=color, alpha=0.7, lw=1,
                    label=arm if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PGD-10 accuracy (%)")
    ax.set_title(f"{dataset}: one line per seed")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(results, f"{dataset}_validation.png")
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, dpi=110, format="png"), suffix=".png")
    plt.close(fig)
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _wall(results: str, units_by_dataset: dict) -> tuple[float, list]:
    """(sum of unit train + eval + later analyses' wall seconds, the invocations' wall seconds)."""
    unit_seconds = sum(r["train"]["wall_seconds"] + r["eval_wall_seconds"]
                       + r.get("margins", {}).get("seconds", 0.0)
                       + r.get("corruptions", {}).get("seconds", 0.0)
                       + r.get("corruptions", {}).get("model", {}).get("train_seconds", 0.0)
                       + sum(s["seconds"] for s in r.get("supplements", []))
                       for units in units_by_dataset.values() for by_seed in units.values()
                       for r in by_seed.values())
    path = os.path.join(results, "invocations.json")
    invocations = read_json(path, "study invocations")["invocations"] if os.path.exists(path) else []
    return unit_seconds, [e["wall_seconds"] for e in invocations]


def _corruption_lines(units_by_dataset: dict) -> list:
    """"Common corruptions" section: accuracy per corruption (mean over severities and seeds) per arm."""
    lines = []
    for dataset, units in units_by_dataset.items():
        by_arm = {arm: [r["corruptions"] for r in by_seed.values() if analyses.corruptions_current(r)]
                for arm, by_seed in units.items() if arm in analyses.CORRUPTION_ARMS}
        by_arm = {arm: done for arm, done in by_arm.items() if done}
        if not by_arm:
            continue
        if not lines:
            lines += ["## Common corruptions", "",
                      "Accuracy in % under each generated corruption, mean over severities 1-5 and seeds "
                      "(mCA: over the benchmark corruptions; held-out corruptions marked *); the `table5-*` "
                      "verdicts above test the mCA differences.", ""]
        first = next(iter(by_arm.values()))[0]
        names = [c for c in first["accuracy"] if c not in first["held_out"]] + list(first["held_out"])
        rows = [["seeds", *(str(len(done)) for done in by_arm.values())],
                ["of them on a retraining whose history differs from the unit's",
                 *(str(sum(c["model"]["history_max_difference"] > 0 for c in done)) for done in by_arm.values())],
                ["clean", *(_pct([c["clean_accuracy"] for c in done]) for done in by_arm.values())],
                ["**mCA**", *(_pct([c["mCA"] for c in done]) for done in by_arm.values())]]
        rows += [[name + ("*" if name in first["held_out"] else ""),
                  *(_pct([c["per_corruption"][name] for c in done]) for done in by_arm.values())]
                 for name in names]
        lines += [f"### {dataset}", ""] + _table(["corruption", *by_arm], rows) + [""]
        if first["not_applicable"]:
            lines += [f"Not applicable to these images, so not in the means: {name} ({why})."
                      for name, why in first["not_applicable"].items()] + [""]
    return lines


def summary_line(records: Sequence[dict], pending: Sequence[dict]) -> str:
    """The README's one-line summary of the study."""
    def counts(section: str, words: dict) -> str:
        chosen = [r for r in records if r["section"] == section]
        return f"{len(chosen)} " + ("papers' claims" if section == "paper" else "questions beyond the papers") + \
            " (" + ", ".join(f"{sum(r['verdict'] == v for r in chosen)} {words[v]}" for v in stats.VERDICTS) + ")"

    datasets = sorted({r["dataset"] for r in records}) or ["no dataset yet"]
    return (f"Reproduction study ([docs/REPRODUCTION.md](docs/REPRODUCTION.md), generated from "
            f"`experiments/results/summary.json`), decided on {', '.join(datasets)}: "
            + counts("paper", {v: v for v in stats.VERDICTS}) + "; " + counts("beyond", ANSWERS)
            + f"; {len(pending)} pending." + _headline(records))


HEADLINE = (("1-pgdat-aa", "PGD-AT"), ("1-alp-aa", "ALP"), ("1-trades-aa", "TRADES"))


def _headline(records: Sequence[dict]) -> str:
    """Claim 1 under AutoAttack, per framework and dataset (what users ask first)."""
    parts = []
    for record in records:
        base_id, _, dataset = record["id"].partition("@")
        name = dict(HEADLINE).get(base_id)
        if name:
            parts.append(f"{name}{' (' + dataset + ')' if dataset else ''} {record['effect']:+.1f} "
                         f"[{record['ci_low']:+.1f}, {record['ci_high']:+.1f}] pts, "
                         + (record["verdict"] if record["section"] == "paper" else ANSWERS[record["verdict"]]))
    if not parts:
        return ""
    return (" Does adding HE raise AutoAttack accuracy (the chain on the logits, the same attacks for both "
            "heads; a question beyond the papers, which report PGD-20), 95 % CI: " + "; ".join(parts) + ".")


ANSWERS = {"reproduced": "yes", "contradicted": "no: the opposite", "absent": "no effect ≥ δ",
           "inconclusive": "inconclusive", "uninformative": "uninformative"}


def _verdict_table(records: Sequence[dict], kind: str) -> list:
    """Rows of decided records; `kind` "verdict" (the papers' claims) or "answer" (beyond them)."""
    def interval(r: dict) -> str:
        d = _digits(r)
        return (f"{r['effect']:+.{d}f} [{r['ci_low']:+.{d}f}, {r['ci_high']:+.{d}f}]"
                + (f" {r['unit']}" if r["unit"].startswith("L2") else "")
                + ("" if r.get("regime_applies", True) else
                   f" (1 % − HE overhead; overhead {r['overhead_percent']:+.1f} % of the linear step)"))

    def threshold(r: dict) -> str:
        if r["non_inferiority"]:
            return f"non-inferiority margin {r['non_inferiority']:g}"
        return f"{r['delta']:g}" if r["delta"] else "—"

    def word(r: dict) -> str:
        text = f"**{r['verdict'] if kind == 'verdict' else ANSWERS[r['verdict']]}**"
        if r["borderline"]:
            text += " (borderline)"
        if r["ceiling"] and stats.at_ceiling(r["ceiling"]):
            text += (f" (at the ceiling: {r['ceiling']['room']:.1f} pts of room below 100 %, the paper's "
                     f"effect {r['ceiling']['paper_effect']:g})")
        if r["failed_units"]:
            alt = r["without_failed_units"]
            text += (f"; without the failed unit(s) {', '.join(r['failed_units'])}: "
                     + (f"{alt['verdict']} {alt['effect']:+.1f} [{alt['ci_low']:+.1f}, {alt['ci_high']:+.1f}] "
                        f"({alt['seeds']} seeds)" if alt["seeds"] else "no seed left"))
        return text

    rows = [[r["id"], f"{r['claim']} ({r['source']})", r["paper"], r["metric"], interval(r),
             f"{r['width']:.{_digits(r)}f}", threshold(r),
             f"{r['seeds']} × {r['n_eval']}" + ("" if r.get("regime_applies", True) else " pairs"),
             (f"{100 * r['baseline_clean']:.1f} / {100 * r['baseline_autoattack']:.1f} ({r['baseline']})"
              if r.get("regime_applies", True)
              else f"— (timing; load {max(r['load_average']):.1f})"),
             word(r)] for r in records]
    return _table(["id", "claim (source)", "paper", "metric", "effect [95 % CI], pts unless noted",
                   "CI width", "δ", "seeds × points", "baseline clean / AA %", kind], rows)


def _failed_unit_lines(failed: Sequence[dict], records: Sequence[dict]) -> list:
    """The "Failed units" paragraph: each unit, the rules it broke, the claims it enters."""
    lines = ["### Failed units", "",
             f"The rule (`experiments/health.py`; written after the audit had reported the FastAT unit "
             f"below, so not blind to it): a unit failed when its training stopped "
             f"before the passes its spec asks for, a training loss was not finite, or its clean accuracy "
             f"is below {100 * health.CLEAN_FLOOR:.0f} %. Claims are decided on every unit (a method's "
             "own instability is a finding); a claim that uses a failed unit is also decided without the "
             "seeds where one failed (in its verdict cell).", ""]
    if not failed:
        return lines + ["No unit failed.", ""]
    for entry in failed:
        uses = [r["id"] for r in records if entry["unit"] in r.get("failed_units", [])]
        lines.append(f"- `{entry['unit']}`: {'; '.join(entry['rules'])}; "
                     + (f"set aside, used by no claim: {entry['superseded']}." if "superseded" in entry
                        else f"enters {', '.join(uses) if uses else 'no claim'}."))
    return lines + [""]


def _digits(record: dict) -> int:
    """Decimals of a record's effect (`stats.resolution`: points 0.1, margins 0.01)."""
    return round(-math.log10(stats.resolution(record["unit"])))


def _superseded_lines(results: str, dataset: str) -> list:
    """A paragraph on the units of `dataset` trained under an earlier regime."""
    paths = sorted(glob.glob(os.path.join(results, "superseded", dataset, "*", "seed*.json")))
    if not paths:
        return []
    rows = []
    for path in paths:
        record = read_json(path, "study unit")
        rows.append(f"{record['arm']} seed {record['seed']}: clean "
                    f"{100 * record['eval']['clean_accuracy']:.1f} %, worst-case robust "
                    f"{100 * record['eval']['robust_accuracy']:.1f} %; "
                    f"{lifecycle.superseded(record, results) or record.get('superseded_because', 'same settings')}")
    return [f"Units of {dataset} set aside (an earlier regime, or the recorded reason; kept in "
            f"`{os.path.relpath(os.path.join(results, 'superseded'), arms.ROOT)}/`, "
            "used by no claim):", ""] + [f"- {row}" for row in rows] + [""]


def method_lines() -> list:
    """The Method section's bullets, written from the study's constants."""
    return [
        "- **Units.** An arm (a training setting) trained with one seed through the library's "
        "runner (`he_keras.runs.run`, the path of `apps/train.py`) and evaluated once "
        "through `he_keras.evaluation.evaluate` on the **whole** test split; one JSON per unit "
        "with per-point outcomes and the SHA-256 of the model's weights (`experiments/units.py`); the models "
        "stay outside git in `runs/study/`, and a later analysis uses a model only if its weights have that "
        "checksum (a fresh clone retrains it and keeps it only if its history and checksum repeat). "
        "Arms of a dataset share its "
        "calibrated regime and are paired by seed (same initialization seed, same validation "
        "split, same data order).",
        "- **Attacks.** Every unit: PGD-20 on the logits (step 2.5·eps/20, random start); for HE "
        "heads PGD-20 on `logits / s`; APGD-DLR; AutoAttack-standard (APGD-CE, APGD-T with 9 "
        "targets, FAB-T with 9 targets, Square with 5,000 queries, each on the points the "
        "previous ones left) on the logits and, for HE heads, again on `logits / s` "
        "(`AutoAttack` in the arm table = per-point worst case of both, what `evaluate` reports "
        "to a user). `scale-invariant` = per-point worst "
        "case of APGD-DLR, APGD-T, FAB-T and Square only (the AutoAttack chain's APGD-T → "
        "FAB-T → Square is re-run on the points APGD-CE broke).",
        f"- **Equal terms.** A claim gives both arms the same attacks with the same budget: its "
        f"AutoAttack metric is `{outcomes.PAIRED_AUTOATTACK}`, the one chain on the logits that every "
        "head faces (the second chain on `logits / s` exists for HE heads only, so the worst case of "
        "both would give an HE arm twice the attacks). Each record lists the attacks behind each arm's "
        "metric (`protocol`), and a record whose arms faced different ones on a metric breaks the "
        "study's rules. Claims are posed as the paper poses them: seed 003's Table 5 gains of HE-LIS / "
        "HE-CMP are over HE (m = 0.2) under PGD-20 on the cosines (`logits / s`: the schedules end "
        "at different s); its Table 6 lead starts at 1/T = 1 on the cosines (the table's first "
        "column); HAT's Table 2 compares with TRADES at β 5 and claims *similar* robustness, posed as "
        "non-inferiority within "
        f"{stats.DELTA_POINTS:g} pt, and a clean gain, which is `uninformative` when the comparison "
        "arm leaves less room below 100 % than the paper's gain.",
        "- **Statistics.** A claim's effect is the mean paired difference of per-point "
        "outcomes (percentage points), signed in the paper's direction, with a 95 % interval "
        f"from a bootstrap over seeds **and** test points (rounds of {stats.N_BOOTSTRAP:,} "
        "replicates until each bound's 95 % Monte-Carlo band (from the replicates' order "
        f"statistics) is at most ±{stats.MC_TARGET:g} of the digit shown, at most "
        f"{stats.MAX_BOOTSTRAP:,}; "
        "`experiments/stats.py`). Each claim declares its smallest effect of interest δ before "
        f"it is decided: {stats.DELTA_POINTS:g} point for accuracies, the margin search's step "
        f"({analyses.MARGIN_PRECISION:g}) for margins, none for the timing thresholds. Verdicts: "
        "**absent** (interval inside (−δ, +δ): the effect, if any, is smaller than δ), "
        "**reproduced** (interval above 0), **contradicted** "
        "(below 0), **inconclusive** (contains 0; its width is given), **uninformative** (the "
        f"claim's baseline arm has clean < {stats.MIN_CLEAN:.0%}, AutoAttack outside "
        f"[{stats.AUTOATTACK_RANGE[0]:.0%}, {stats.AUTOATTACK_RANGE[1]:.0%}] or has not converged "
        f"(|validation trend| ≥ {stats.CONVERGENCE_TOLERANCE:g} pt, Arms below); a claim whose comparison "
        "arm left the paper's effect no room below 100 % and whose interval is absent or inconclusive; "
        "a timing claim whose "
        f"timed runs saw a 1-minute load average above {stats.MAX_TIMING_LOAD:g}, i.e. other work "
        "on the cores). A verdict marked *borderline* changes for some bounds inside their "
        "Monte-Carlo bands: another bootstrap seed could flip it.",
        "- **Margins** (HAT claims). Per test point, the L2 distance along a unit direction until "
        "the model's prediction changes (capped at "
        f"{analyses.MARGIN_CAP:g}, step {analyses.MARGIN_PRECISION:g}), along R0 = the standard model's "
        "PGD directions (same seed) and R1 / R5 = the unit's own PGD directions after epochs 1 and "
        "5 (its first epochs replayed, accepted only if the replay repeats the unit's validation "
        "curve); `margin-gain` subtracts the standard model's margin along the same direction. "
        "HAT's Fig. 4 fine-tunes a standard model adversarially; arm `pgdat_ft` does the same (30 "
        "epochs of PGD-AT from the standard model of its seed), while the other arms train from "
        "scratch, where R0 still comes from the standard model of the same seed. "
        "Effects are mean paired differences in L2 units (the HAT paper reports medians).",
        "- **Class-wise claims** (seed 003). Classes are ranked on one half of the test points "
        "(alternating within each class) and scored on the other, then the halves swap "
        "(cross-fitting: a gap produced by chance alone has expectation 0). The weight-norm claim "
        "is the covariance over classes of the standardized norm of a class's weight vector and its "
        "PGD-20 accuracy (the paper's figures; under AutoAttack beyond the papers). Every bootstrap replicate recomputes the statistic from its resampled "
        "seeds and points: weighted class accuracies, and the class ranking redone on them, so the "
        "interval counts the uncertainty of which classes are the robust ones "
        "(`experiments/classwise.py`).",
        "- **Common corruptions** (HE Table 5). Each unit of the arms "
        f"{', '.join(f'`{a}`' for a in analyses.CORRUPTION_ARMS)} is also scored on its test points "
        "corrupted by every applicable corruption of Hendrycks & Dietterich at severities 1-5 "
        "(`he_keras.evaluation.corruption_benchmark`: generated here, CIFAR-10-C's parameters "
        f"adapted to the image size, corruption seed {analyses.CORRUPTION_SEED} for every unit, so paired arms "
        "see the same corrupted images). mCA = mean accuracy over the benchmark corruptions and "
        "severities (the paper's Table 5 averages its CIFAR-10-C / ImageNet-C columns the same way); "
        "its per-point outcome is the fraction of those configurations a point survives. Units whose "
        "model is not kept are trained again with their spec and seed; a retraining by a later version "
        "of the code may not repeat the unit's history bit for bit, and is then a model of the same "
        "arm, seed and data order (the table below counts them).",
        f"- **FN in the attack objective** (HE Table 7, standard model). "
        f"{' / '.join(f'PGD-{k}' for k in protocol.FN_STEPS)} from a zero start, step "
        f"eps/{1 / PROBE_STEP_FRACTION:g} (`he_keras.defaults.probe_step_size`; the paper's 2/255 at "
        "eps 8/255), with cross-entropy on the logits or on the logits recomputed from "
        "L2-normalized features rescaled to each point's clean feature norm "
        "(`he_keras.evaluation.raw_output.OnFeatureNormalized`; the paper's Eq. 12 does not rescale: "
        "here the softmax temperature stays the model's); the examples are scored on the model.",
    ]


def render(results: str, doc: str, readme: Optional[str], quick: bool = False) -> str:
    """Renders the document from `<results>/summary.json` and the unit JSONs."""
    summary = read_json(os.path.join(results, "summary.json"), "study summary")
    records, pending = summary["claims"], summary["pending"]
    units_by_dataset = {d: outcomes.load_units(results, d) for d in sorted(arms.REGIMES)}
    unit_seconds, invocations = _wall(results, units_by_dataset)
    finished = [w for w in invocations if w is not None]
    problems = summary.get("problems", [])
    lines = ["# Reproduction study", ""]
    if quick:
        lines += [f"**QUICK mode** (toy sizes: 2 epochs, {arms.QUICK_N_TEST} test points, AutoAttack chains "
                  f"with {arms.QUICK_AA_BUDGET:g} of AutoAttack's iterations, FastAT's step timing only): "
                  "the numbers below test the pipeline and decide nothing.", ""]
    lines += [
        "Generated by `make experiments` (`experiments/run_study.py`) from "
        "`experiments/results/`; do not edit by hand.", "",
        "## Method", "",
        *method_lines(),
        "",
    ]
    for dataset, regime in arms.REGIMES.items():
        lines += [f"## Regime: {dataset}", "",
                  f"Calibrated (`experiments/calibrate.py`, figure below): {regime['model']}, "
                  f"eps {regime['eps']}, training PGD-{regime['steps']} (step 2.5·eps/"
                  f"{regime['steps']}), {regime['epochs']} epochs, {regime['optimizer']} lr "
                  f"{regime['lr']}, batch {regime['batch_size']}, LR ×0.1 at epochs "
                  f"{', '.join(str(e) for e in regime['lr_decay_epochs'])}, "
                  + (f"training eps grown linearly from 0 over the first {regime['eps_warmup_epochs']:g} "
                     "epochs (`--eps_warmup_epochs`), "
                     if regime.get("eps_warmup_epochs") else "")
                  + f"validation split "
                  f"{regime['validation_split']:.0%} (PGD-10 after every epoch, same random start "
                  f"each epoch). Seeds: {arms.SEEDS[dataset]}.", "",
                  f"![calibration]({CALIBRATION_PNG})", ""]
        lines += _superseded_lines(results, dataset)
        base = units_by_dataset.get(dataset, {}).get("pgdat")
        if base:
            figure = validation_figure(results, dataset, units_by_dataset[dataset])
            lines += ["Validation curves of this study's PGD-AT and PGD-AT+HE units:", "",
                      f"![{dataset} validation]({os.path.relpath(figure, os.path.dirname(os.path.abspath(doc)))})",
                      ""]
            means = claims.arm_means({"pgdat": base}, "pgdat")
            changes = [c for c in (claims.unit_trend(r) for r in base.values()) if c is not None]
            trend = float(np.mean(changes)) if changes else float("nan")
            jitter = float(np.mean(np.abs(changes))) if changes else float("nan")
            checks = [("clean >= 90 %", means["clean"] >= stats.MIN_CLEAN),
                      ("AutoAttack in [25, 85] %",
                       stats.AUTOATTACK_RANGE[0] <= means["AutoAttack"] <= stats.AUTOATTACK_RANGE[1]),
                      (f"converged (validation trend < {stats.CONVERGENCE_TOLERANCE:g} pt)",
                       stats.converged([claims.arm_trend(base)]))]
            lines += [f"Plain PGD-AT in this study ({len(base)} seed{'s' if len(base) > 1 else ''}): clean "
                      f"{100 * means['clean']:.1f} %, AutoAttack {100 * means['AutoAttack']:.1f} %, "
                      f"validation trend {trend:+.2f} pts (mean over seeds; "
                      f"mean |trend| {jitter:.2f} pts, one validation point = "
                      f"{100 / max(1, base[min(base)]['train']['validation']['n_examples']):.2f} pts): "
                      + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks) + ".", ""]
    lines += ["## Verdicts", ""]
    if problems:
        lines += ["**Records that break the study's rules** (fix before reading the table): "
                  + "; ".join(problems), ""]
    lines += ["### The papers' claims", "",
              "Each on the paper's metric and comparison; both arms of a claim faced the same attacks "
              "(`protocol` in `summary.json`).", ""]
    lines += _verdict_table([r for r in records if r["section"] == "paper"], "verdict") + [""]
    lines += ["### Beyond the papers", "",
              "This study's own questions: a paper's claim asked under another metric (AutoAttack for a "
              "PGD-20 claim), another comparison, or a check of an evaluation. No paper made these claims, "
              "so the answer says what the interval shows: **yes** (above 0), **no: the opposite** "
              "(below 0), **no effect ≥ δ** (inside ±δ), inconclusive, uninformative "
              "(`summary.json` keeps the verdict words of the rule).", ""]
    lines += _verdict_table([r for r in records if r["section"] == "beyond"], "answer") + [""]
    lines += _failed_unit_lines(summary.get("failed_units", []), records)
    if pending:
        lines += ["### Pending (units not all run yet: no verdict)", ""]
        for p in pending:
            what = p["pending"] if isinstance(p["pending"], str) else ", ".join(
                f"{arm}: {n} seed(s) missing" for arm, n in p["pending"].items())
            lines.append(f"- `{p['id']}` {p['claim']} — {what}")
        lines.append("")
    lines += ["## Arms", "",
              "Accuracy in % (mean ± sd over seeds) on the whole test split; `val trend` = "
              "fitted change of the validation PGD-10 accuracy (the attack restarts from the same seed "
              f"every epoch) across the last {stats.CONVERGENCE_WINDOW} passes after the last LR decay "
              "(at least 2: FreeAT's budget ends 2 passes after its last decay), mean over seeds "
              f"(converged: |mean| < {stats.CONVERGENCE_TOLERANCE:g}, `experiments/stats.py`, the rule of "
              "calibration and of every verdict's baseline), then the mean and the largest |trend| of one "
              "seed, in points; minutes = median per unit.", ""]
    for dataset, units in units_by_dataset.items():
        if units:
            lines += [f"### {dataset}", ""]
            lines += _table(["arm", "seeds", "clean", "PGD-20", "PGD-20 (logits/s)", "AutoAttack",
                             "scale-invariant", "val trend", "train / eval min"],
                            _arm_rows(units)) + [""]
    lines += _corruption_lines(units_by_dataset)
    lines += ["## Wall time", "",
              f"Units: {unit_seconds / 3600:.2f} h of training, evaluation and later analyses "
              "(supplementary attacks, margins, corruptions; sum over units, "
              f"2 worker processes on 2 cores); `run_study.py` invocations: "
              f"{len(invocations)}, {len(finished)} of them finished, {sum(finished) / 3600:.2f} h of wall "
              f"time (`invocations.json`; the other {len(invocations) - len(finished)} were killed before "
              "they could record their end; their finished units count above).", ""]
    text = "\n".join(lines)
    write_atomic(doc, lambda p: open(p, "w").write(text))
    if readme:
        _rewrite_readme(readme, summary_line(records, pending))
    return text


def _rewrite_readme(path: str, line: str) -> None:
    with open(path) as f:
        text = f.read()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} block for the study line")
    new = text[:begin + len(README_BEGIN)] + "\n" + line + "\n" + text[end:]
    write_atomic(path, lambda p: open(p, "w").write(new))
