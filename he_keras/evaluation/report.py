"""Writes the evaluation reports: `report.json`, `report.md` and PNG figures
of the attack suite, and `corruptions.json`, `corruptions.md` and a heatmap
of the common-corruption benchmark.

Every file is written atomically (a temporary file in the output directory,
then `os.replace`), so a crash never leaves a half-written report behind.
The Markdown tables follow the HE paper's Table 2 (one row per model, one
column per attack), seed 003's Table 2 (one row per attack, total then one
column per class) and the HE paper's Table 5 (mCA then per corruption); the
corruption report's table follows Hendrycks & Dietterich's ImageNet-C
results table (one row per corruption, its accuracy per severity, CE and
relative CE, then mCA and mCE).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from he_keras.files import write_atomic  # noqa: E402


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write, suffix=os.path.splitext(path)[1])


def _save_figure(fig: plt.Figure, path: str) -> None:
    try:
        write_atomic(
            path,
            lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"),
            suffix=".png",
        )
    finally:
        plt.close(fig)


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def attack_table(report: dict) -> str:
    """HE paper Table 2: one row, clean then each attack's accuracy (%).

    Attacks that only ran on still-robust points have no standalone accuracy;
    their column shows the ensemble's cumulative accuracy after them, marked
    with `≤`.
    """
    cells = [_pct(report["clean_accuracy"])]
    for a in report["attacks"]:
        cells.append(
            _pct(a["accuracy"]) if a["accuracy"] is not None
            else "≤ " + _pct(a["cumulative_accuracy"])
        )
    cells.append(f"**{_pct(report['robust_accuracy'])}**")
    header = ["Model", "Clean"] + [a["name"] for a in report["attacks"]] + ["Worst case"]
    return _table(header, [[report["settings"]["model"]] + cells])


def ensemble_table(report: dict) -> str:
    """The per-point worst-case bookkeeping, one row per attack."""
    header = ["#", "Attack", "Kind", "Points attacked", "Newly broken",
              "Cumulative robust acc. (%)", "Chain: robust acc. (%)", "Outside ball", "Time (s)",
              "Settings"]
    rows = [
        [i, a["name"], a["kind"], a["n_attacked"], a["n_broken"], _pct(a["cumulative_accuracy"]),
         "—" if a["chain"] is None else f"{a['chain']}: {_pct(a['chain_accuracy'])}",
         a["n_outside_ball"], f"{a['seconds']:.1f}", _settings(a["config"])]
        for i, a in enumerate(report["attacks"], 1)
    ]
    return _table(header, rows)


CHECK_MARKS = {"passed": "ok", "flagged": "**FLAG**", "not run": "not run"}


def classwise_table(classwise: dict) -> str:
    """Seed 003 Table 2: accuracy (%) in total and per class, one row per attack."""
    entries = [("Clean", classwise["clean"]), *classwise["attacks"].items(),
               ("Worst case", classwise["worst_case"])]
    rows = [
        [name, _pct(sum(e["correct"]) / max(sum(e["n"]), 1))] + [_pct(a) for a in e["accuracy"]]
        for name, e in entries
    ]
    return _table(["Attack", "Tot."] + classwise["classes"], rows)


def confusion_table(classwise: dict) -> str:
    """Robustness confusion matrix: rows true class, columns class on x*."""
    rows = [[c] + row for c, row in zip(classwise["classes"], classwise["confusion_matrix"])]
    return _table(["true \\ pred. on x*"] + classwise["classes"], rows)


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
        out = ["", _table(["Spearman: weight norm vs class accuracy under", "rho", "p-value"], corr_rows)]
    return [_table(["class"] + classwise["classes"], rows)] + out


def _margin_table(margin: dict) -> str:
    keys = ("n", "mean", "p10", "p50", "p90", "n_capped")
    rows = [
        [direction] + [f"{margin[direction][k]:.2f}" if isinstance(margin[direction][k], float)
                       else margin[direction][k] for k in keys]
        for direction in ("adversarial", "orthogonal") if margin[direction].get("n")
    ]
    return _table(["direction", *keys], rows)


def _headline_lines(headline: dict) -> list:
    """One bullet per headline number (AutoAttack accuracies in %, the ADBD as is)."""
    lines = [
        f"- {name}: {_pct(value)} %" if name.startswith("AutoAttack") else f"- {name}: {value:.4f}"
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
        f"**Clean accuracy {_pct(report['clean_accuracy'])} %, robust accuracy under the "
        f"per-point worst case of all {len(report['attacks'])} attacks "
        f"{_pct(report['robust_accuracy'])} %.**",
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
            rows = [[f"{p[label]:g}", _pct(p["accuracy"])] for p in curve["points"]]
            out += ["", f"## Accuracy vs {label} ({_settings(curve['attack'])})", "",
                    _table([label, "accuracy (%)"], rows)]
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
            out.append(_table(["mCA", *names], [[_pct(corruptions["mCA"])] + [
                _pct(corruptions["per_corruption"][c]) for c in names]]))
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


def _write_files(output_dir: str, texts: dict, figures: Callable[[], dict]) -> list:
    """Writes text files, then the figures `figures()` makes, into `output_dir`.

    Args:
        output_dir: Directory (created if missing; must not be a file).
        texts: `{file name: text}`.
        figures: Returns `{file name: figure}`; called once the directory is checked.

    Returns:
        The paths written, in the order given.
    """
    if os.path.isfile(output_dir):
        raise ValueError(f"`output_dir` is a file, not a directory: {output_dir!r}")
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for name, text in texts.items():
        paths.append(os.path.join(output_dir, name))
        write_text(paths[-1], text)
    for name, fig in figures().items():
        paths.append(os.path.join(output_dir, name))
        _save_figure(fig, paths[-1])
    return paths


def _json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def write_report(report: dict, output_dir: str) -> list:
    """Writes `report.json`, `report.md` and the figures into `output_dir`.

    Args:
        report: The report dict of `he_keras.evaluation.evaluate`.
        output_dir: Directory (created if missing; must not be a file).

    Returns:
        The paths written.
    """
    return _write_files(
        output_dir, {"report.json": _json(report), "report.md": markdown(report)},
        lambda: _figures(report),
    )


# === The common-corruption report (`he_keras.evaluation.corruptions`) ===

CORRUPTION_REPORT_FILES = ("corruptions.json", "corruptions.md", "corruption_heatmap.png")


def _ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _corruption_rows(result: dict) -> tuple[list, list]:
    """Header and rows: accuracy (%) per severity, mean, and CE columns."""
    severities = [str(s) for s in result["severities"]]
    header = ["corruption"] + [f"sev {s}" for s in severities] + ["mean"]
    errors = "CE" in result
    if errors:
        header += ["CE", "rel. CE"]
    rows = []
    for corruption, by_severity in result["accuracy"].items():
        row = [corruption] + [_pct(by_severity[s]) for s in severities]
        row.append(_pct(result["per_corruption"][corruption]))
        if errors:
            row += [_ratio(result["CE"][corruption]), _ratio(result["relative_CE"][corruption])]
        rows.append(row)
    return header, rows


def _corruption_summary(result: dict) -> list:
    """The summary lines: clean accuracy, mCA, held-out mCA, mCE, what was left out."""
    n_bench = len(result["accuracy"]) - len(result["held_out"])
    lines = []
    if "clean_accuracy" in result:
        lines.append(f"clean accuracy: {_pct(result['clean_accuracy'])}")
    lines.append(f"mCA ({n_bench} benchmark corruptions): {_pct(result['mCA'])}")
    if result["held_out"]:
        lines.append(
            f"held-out mCA ({len(result['held_out'])} held-out corruptions): "
            f"{_pct(result['held_out_mCA'])}"
        )
    if "reference" in result:
        lines.append(
            f"mCE vs {result['reference']['model']} (reference mCA "
            f"{_pct(result['reference']['mCA'])}): {_ratio(result['mCE'])} %, "
            f"relative mCE: {_ratio(result['relative_mCE'])} %"
        )
    for name, reason in result["not_applicable"].items():
        lines.append(f"not applicable: {name} ({reason})")
    return lines


def corruption_table(result: dict) -> str:
    """The plain-text table of a corruption report, then its summary lines.

    The layout of Hendrycks & Dietterich's ImageNet-C results table: one row
    per corruption (here its accuracy per severity too), then the means.

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        One row per corruption (accuracy % per severity and its mean, CE and
        relative CE in % with a reference model), then the clean accuracy,
        mCA, held-out mCA, mCE and the corruptions that did not apply.

    Example:

    ```python
    print(corruption_table(corruption_benchmark(model, x, y)))
    ```
    """
    header, rows = _corruption_rows(result)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    return "\n".join(lines + _corruption_summary(result))


def corruption_markdown(result: dict) -> str:
    """Renders a corruption report as Markdown: settings, table, summary, heatmap.

    The table has the layout of `corruption_table` (Hendrycks & Dietterich's
    ImageNet-C results table, with the accuracy per severity).

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        The Markdown text of `corruptions.md`.

    Example:

    ```python
    text = corruption_markdown(corruption_benchmark(model, x, y))
    ```
    """
    settings = [f"source `{result['source']}`", f"dataset `{result['dataset']}`",
                f"n = {', '.join(str(n) for n in result['n_per_config'])} per corruption and severity"]
    if "seed" in result:
        settings.append(f"seed {result['seed']}")
    settings.append(f"{result['seconds']:.1f} s")
    return "\n".join([
        f"# Common corruptions: `{result['model']}`",
        "",
        ", ".join(settings) + ".",
        "",
        "Accuracy (%) per corruption and severity; CE and relative CE in % of the reference's.",
        "",
        _table(*_corruption_rows(result)),
        "",
        *[f"- {line}" for line in _corruption_summary(result)],
        "",
        f"![accuracy per corruption and severity]({CORRUPTION_REPORT_FILES[2]})",
        "",
    ])


def corruption_heatmap(result: dict) -> plt.Figure:
    """Heatmap of the accuracy (%), corruptions x severities plus their mean.

    The cells of `corruption_table`'s accuracy columns, coloured on a fixed
    0-100 % scale.

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        The Matplotlib figure (the caller closes it).

    Example:

    ```python
    corruption_heatmap(result).savefig("corruption_heatmap.png")
    ```
    """
    severities = [str(s) for s in result["severities"]]
    names = list(result["accuracy"])
    values = np.array([
        [result["accuracy"][c][s] for s in severities] + [result["per_corruption"][c]] for c in names
    ]) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * values.shape[1], 1.0 + 0.32 * len(names)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                color="black" if value > 60 else "white")
    ax.set_xticks(range(values.shape[1]), [*severities, "mean"])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    ax.set_title(f"{result['model']} on {result['dataset']}: mCA {_pct(result['mCA'])} %", fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return fig


def write_corruption_report(result: dict, output_dir: str) -> list:
    """Writes `corruptions.json`, `corruptions.md` and `corruption_heatmap.png`.

    Each file is written atomically; the Markdown table follows
    `corruption_table` (Hendrycks & Dietterich's ImageNet-C results table).

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.
        output_dir: Directory (created if missing; must not be a file).

    Returns:
        The paths written.

    Example:

    ```python
    write_corruption_report(corruption_benchmark(model, x, y), "runs/eval")
    ```
    """
    json_name, md_name, heatmap_name = CORRUPTION_REPORT_FILES
    return _write_files(
        output_dir, {json_name: _json(result), md_name: corruption_markdown(result)},
        lambda: {heatmap_name: corruption_heatmap(result)},
    )
