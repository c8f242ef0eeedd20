"""Writes the attack suite's report: `report.json`, `report.md` and PNG figures.

The Markdown tables follow the HE paper's Table 2 (one row per model, one
column per attack), seed 003's Table 2 (one row per attack, total then one
column per class) and the HE paper's Table 5 (mCA then per corruption). Files
are written atomically (`report_io`); the corruption benchmark's report is
`corruption_report`.
"""

from __future__ import annotations

import numpy as np

# pyplot with the headless backend chosen once, in report_io.
from he_keras.evaluation.report_io import markdown_table, pct, plt, to_json, write_files


def _settings(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def attack_table(report: dict) -> str:
    """HE paper Table 2: one row, clean then each attack's accuracy (%).

    Attacks that only ran on still-robust points have no standalone accuracy;
    their column shows the ensemble's cumulative accuracy after them, marked
    with `≤`.
    """
    cells = [pct(report["clean_accuracy"])]
    for a in report["attacks"]:
        cells.append(
            pct(a["accuracy"]) if a["accuracy"] is not None
            else "≤ " + pct(a["cumulative_accuracy"])
        )
    cells.append(f"**{pct(report['robust_accuracy'])}**")
    header = ["Model", "Clean"] + [a["name"] for a in report["attacks"]] + ["Worst case"]
    return markdown_table(header, [[report["settings"]["model"]] + cells])


def ensemble_table(report: dict) -> str:
    """The per-point worst-case bookkeeping, one row per attack."""
    header = ["#", "Attack", "Kind", "Points attacked", "Newly broken",
              "Cumulative robust acc. (%)", "Chain: robust acc. (%)", "Outside ball", "Time (s)",
              "Settings"]
    rows = [
        [i, a["name"], a["kind"], a["n_attacked"], a["n_broken"], pct(a["cumulative_accuracy"]),
         "—" if a["chain"] is None else f"{a['chain']}: {pct(a['chain_accuracy'])}",
         a["n_outside_ball"], f"{a['seconds']:.1f}", _settings(a["config"])]
        for i, a in enumerate(report["attacks"], 1)
    ]
    return markdown_table(header, rows)


CHECK_MARKS = {"passed": "ok", "flagged": "**FLAG**", "not run": "not run"}


def classwise_table(classwise: dict) -> str:
    """Seed 003 Table 2: accuracy (%) in total and per class, one row per attack."""
    entries = [("Clean", classwise["clean"]), *classwise["attacks"].items(),
               ("Worst case", classwise["worst_case"])]
    rows = [
        [name, pct(sum(e["correct"]) / max(sum(e["n"]), 1))] + [pct(a) for a in e["accuracy"]]
        for name, e in entries
    ]
    return markdown_table(["Attack", "Tot."] + classwise["classes"], rows)


def confusion_table(classwise: dict) -> str:
    """Robustness confusion matrix: rows true class, columns class on x*."""
    rows = [[c] + row for c, row in zip(classwise["classes"], classwise["confusion_matrix"])]
    return markdown_table(["true \\ pred. on x*"] + classwise["classes"], rows)


def _classwise_properties(classwise: dict) -> list:
    rows = [["mean variance of predicted probabilities"]
            + ["—" if v is None else f"{v:.4f}" for v in classwise["probability_variance"]]]
    out = []
    if classwise["weight_norms"] is not None:
        rows.append(["classifier weight norm"] + [f"{v:.3f}" for v in classwise["weight_norms"]])
        corr_rows = [
            [name, "—", "undefined (constant)"] if corr is None
            else [name, f"{corr['rho']:.3f}", f"{corr['p_value']:.3g}"]
            for name, corr in classwise["weight_norm_vs_robustness"].items()
        ]
        out = ["", markdown_table(["Spearman: weight norm vs class accuracy under", "rho", "p-value"], corr_rows)]
    return [markdown_table(["class"] + classwise["classes"], rows)] + out


def _margin_table(margin: dict) -> str:
    keys = ("n", "mean", "p10", "p50", "p90", "n_capped")
    rows = [
        [direction] + [f"{margin[direction][k]:.2f}" if isinstance(margin[direction][k], float)
                       else margin[direction][k] for k in keys]
        for direction in ("adversarial", "orthogonal") if margin[direction].get("n")
    ]
    return markdown_table(["direction", *keys], rows)


def _headline_lines(headline: dict) -> list:
    """One bullet per headline number (AutoAttack accuracies in %, the ADBD as is)."""
    lines = [
        f"- {name}: {pct(value)} %" if name.startswith("AutoAttack") else f"- {name}: {value:.4f}"
        for name, value in headline.items()
    ]
    return lines + [""] if lines else []


def markdown(report: dict) -> str:
    """Renders the whole report as Markdown."""
    s = report["settings"]
    out = [
        f"# Robustness evaluation of `{s['model']}`",
        "",
        f"Dataset `{s['dataset']}`, n = {s['n']} test points, threat model {s['norm']} "
        f"eps = {s['eps']:g}, suite `{s['suite']}`, seed {s['seed']}, "
        f"total time {report['seconds']:.1f} s.",
        "",
        f"**Clean accuracy {pct(report['clean_accuracy'])} %, robust accuracy under the "
        f"per-point worst case of all {len(report['attacks'])} attacks "
        f"{pct(report['robust_accuracy'])} %.**",
        "",
        *_headline_lines(report["headline"]),
        "## Accuracy (%) per attack",
        "",
        attack_table(report),
        "",
        "## Per-point worst case, attack by attack",
        "",
        ensemble_table(report),
        "",
    ]
    for item in report.get("skipped_attacks", []):
        out += [f"Skipped: {item['name']} ({item['reason']}).", ""]
    out += ["## Gradient-masking checks", ""]
    for check in report["checks"]:
        out.append(f"- {CHECK_MARKS[check['status']]} `{check['name']}`: {check['message']}")
    for key, label in (("accuracy_vs_eps", "eps"), ("accuracy_vs_steps", "steps")):
        curve = report["curves"].get(key)
        if curve:
            rows = [[f"{p[label]:g}", pct(p["accuracy"])] for p in curve["points"]]
            out += ["", f"## Accuracy vs {label} ({_settings(curve['attack'])})", "",
                    markdown_table([label, "accuracy (%)"], rows)]
    classwise = report.get("classwise")
    if classwise:
        out += ["", "## Class-wise accuracy (%)", "", classwise_table(classwise),
                "", "## Robustness confusion matrix (counts)", "", confusion_table(classwise),
                "", "## Class-wise properties", "", *_classwise_properties(classwise)]
    margin = report.get("margin")
    if margin:
        out += ["", f"## Margin along initial adversarial directions ({_settings(margin['settings'])})",
                "", _margin_table(margin)]
    corruptions = report.get("corruptions")
    if corruptions:
        out += ["", f"## Common corruptions ({corruptions['dataset']})", ""]
        if "mCA" in corruptions:
            names = list(corruptions["per_corruption"])
            out.append(markdown_table(["mCA", *names], [[pct(corruptions["mCA"])] + [
                pct(corruptions["per_corruption"][c]) for c in names]]))
        else:
            out.append(f"Skipped: {corruptions['skipped']}")
    return "\n".join(out) + "\n"


def _figures(report: dict) -> dict:
    figures = {}
    for key, label in (("accuracy_vs_eps", "eps"), ("accuracy_vs_steps", "steps")):
        curve = report["curves"].get(key)
        if curve:
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            ax.plot([p[label] for p in curve["points"]],
                    [100 * p["accuracy"] for p in curve["points"]], "o-")
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"Accuracy vs {label}")
            if label == "steps":
                ax.set_xscale("log")
            figures[f"{key}.png"] = fig
    classwise = report.get("classwise")
    if not classwise:
        return figures
    classes = np.array(classwise["classes"])
    clean = [np.nan if a is None else 100 * a for a in classwise["clean"]["accuracy"]]
    worst = [np.nan if a is None else 100 * a for a in classwise["worst_case"]["accuracy"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(classes - 0.2, clean, 0.4, label="clean")
    ax.bar(classes + 0.2, worst, 0.4, label="worst case")
    ax.set_xticks(classes)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    figures["classwise_accuracy.png"] = fig
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    image = ax.imshow(np.array(classwise["confusion_matrix"]), cmap="viridis")
    fig.colorbar(image, ax=ax)
    ax.set_xlabel("class predicted on x*")
    ax.set_ylabel("true class")
    ax.set_xticks(classes)
    ax.set_yticks(classes)
    ax.set_title("Robustness confusion matrix")
    figures["robustness_confusion.png"] = fig
    if classwise["weight_norms"] is not None:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        ax.scatter(classwise["weight_norms"], worst)
        for c, xv, yv in zip(classes, classwise["weight_norms"], worst):
            ax.annotate(str(c), (xv, yv))
        ax.set_xlabel("classifier weight norm")
        ax.set_ylabel("worst-case accuracy (%)")
        figures["weight_norm_vs_robustness.png"] = fig
    return figures


def write_report(report: dict, output_dir: str) -> list:
    """Writes `report.json`, `report.md` and the figures into `output_dir`.

    Args:
        report: The report dict of `he_keras.evaluation.evaluate`.
        output_dir: Directory (created if missing; must not be a file).

    Returns:
        The paths written.
    """
    return write_files(
        output_dir, {"report.json": to_json(report), "report.md": markdown(report)},
        lambda: _figures(report),
    )
