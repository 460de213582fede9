"""`report`: a Markdown report with PNG plots from whatever a run directory holds.

It reads only files the other commands wrote (metrics.jsonl and summary.json of a training run,
the shift-score JSON, compare.json), so a report can be rebuilt at any time without a model. On an
unfinished run it writes what exists and names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.data.pair_check import checks_lines
from autocustom.errors import DataError
from autocustom.fileio import read_json, write_text_atomic
from autocustom.layout import (
    COMPARE_CONFIG,
    COMPARE_RESULT,
    DIAL,
    DIAL_PLOT,
    DIAL_RESULT,
    MANIFEST,
    METRICS,
    PLOTS,
    REPORT,
    RUN_CONFIG,
    RUN_DATA,
    RUN_SCORE,
    RUN_TRAIN,
    SUMMARY,
    read_metrics,
    read_summary,
)
from autocustom.scoring.stats import format_estimate

ROW_KEYS = ("model", "method", "condition")
FIGSIZE = (8, 4.5)
DPI = 100


@dataclass
class ReportResult:
    path: Path
    plots: list[Path]
    sections: list[str]
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": str(self.path),
            "plots": [str(p) for p in self.plots],
            "sections": self.sections,
            "missing": self.missing,
            "complete": not self.missing,
        }


def build_report(run_dir: str | Path) -> ReportResult:
    """Write `report.md` and `plots/*.png` into `run_dir` from what it holds (see module doc)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "is not a directory", "pass a run, train or compare output directory")
    parts: list[str] = [f"# autocustom report: {run_dir.name}", ""]
    result = ReportResult(run_dir / REPORT, [], [])
    parts += _run_sections(run_dir, result)
    if (run_dir / COMPARE_RESULT).is_file():
        result.sections.append("compare")
        parts += _compare_section(read_json(run_dir / COMPARE_RESULT), run_dir / PLOTS, result.plots)
    elif (run_dir / COMPARE_CONFIG).is_file():
        result.missing.append(
            f"{run_dir / COMPARE_RESULT} (the comparison has not finished: rerun it to resume)"
        )
    if not result.sections and not result.missing:
        raise DataError(
            run_dir,
            "holds no training metrics, shift-score report or comparison",
            "pass a directory written by `autocustom run`, `train` or `compare`",
        )
    if result.missing:
        parts += ["## Missing", "", *[f"- {item}" for item in result.missing], ""]
    write_text_atomic(result.path, "\n".join(parts))
    return result


def _run_sections(run_dir: Path, result: ReportResult) -> list[str]:
    """Training, shift-score and dial sections of a `train` or `run` directory (what of them exists)."""
    train_dir = run_dir / RUN_TRAIN if (run_dir / RUN_TRAIN).is_dir() else run_dir
    plot_dir, parts = run_dir / PLOTS, _data_section(run_dir / RUN_DATA)
    if (train_dir / METRICS).is_file():
        result.sections.append("training")
        parts += _training_section(train_dir, plot_dir, result.plots, result.missing)
    elif (train_dir / RUN_CONFIG).is_file():
        result.missing.append(f"{train_dir / METRICS} (training has not evaluated yet)")
    if (run_dir / RUN_SCORE).is_file():
        result.sections.append("shift-score")
        parts += _score_section(read_json(run_dir / RUN_SCORE), plot_dir, result.plots)
    elif result.sections == ["training"]:
        result.missing.append(
            f"{run_dir / RUN_SCORE} (not scored yet: run `autocustom shift-score --out {run_dir / RUN_SCORE}`)"
        )
    if (train_dir / DIAL / DIAL_RESULT).is_file():
        result.sections.append("dial")
        parts += _dial_section(read_json(train_dir / DIAL / DIAL_RESULT), plot_dir, result.plots)
    return parts


def _data_section(data_dir: Path) -> list[str]:
    """The dataset's pair check and leakage audit, as `generate` printed them (a `run` directory)."""
    if not (data_dir / MANIFEST).is_file():
        return []
    lines = checks_lines(read_json(data_dir / MANIFEST).get("counts", {}))
    return ["## Data", "", *[f"- {line}" for line in lines], ""] if lines else []


def _training_section(train_dir: Path, plot_dir: Path, plots: list[Path], missing: list[str]) -> list[str]:
    rows = read_metrics(train_dir)
    summary = read_summary(train_dir)
    if summary is None:
        missing.append(f"{train_dir / SUMMARY} (training unfinished: rerun with --resume)")
    plot = _plot_training(rows, summary, plot_dir / "training.png")
    plots.append(plot)
    lines = [
        "## Training",
        "",
        f"![BiasShift over training]({plot.relative_to(plot_dir.parent)})",
        "",
    ]
    if summary is not None:
        if summary.get("selection"):
            lines += [f"**Checkpoint selection:** {summary['selection']}.", ""]
        lines += [
            "| figure | value |",
            "|---|---|",
            f"| best step | {summary['best_step']} of {summary['steps']} |",
            f"| stop reason | {summary['stop_reason']} |",
            f"| BiasShift (validation, best) | {format_estimate(summary.get('bias_shift'))} |",
            *_final_rows(summary),
            f"| wall time | {summary['wall_seconds']:.0f} s ({summary['pairs_per_second']:.2f} pairs/s) |",
            "",
        ]
    return lines


def _final_rows(summary: dict[str, Any]) -> list[str]:
    """The kept model's final figures, or where they are when training left them to the run's score."""
    if summary.get("extra", {}).get("final_measurement"):
        return ["| kept model on the test split | the Shift score section below |"]
    return [
        f"| BiasShift (test) | {format_estimate(summary.get('bias_shift_test'))} |",
        f"| MMLU before | {format_estimate(summary.get('mmlu_before'))} |",
        f"| MMLU after | {format_estimate(summary.get('mmlu_after'))} |",
        f"| Drift (nats/token) | {format_estimate(summary.get('drift'))} |",
    ]


def _score_section(score: dict[str, Any], plot_dir: Path, plots: list[Path]) -> list[str]:
    lines = [
        "## Shift score",
        "",
        f"Model `{score['model']}` vs base `{score['base']}` on the {score['split']} split, "
        f"toward **{score['toward']}**.",
        "",
        "| metric | value [95% interval] | n |",
        "|---|---|---|",
    ]
    for name, estimate in score["metrics"].items():
        if estimate is not None:
            lines.append(f"| {name} | {format_estimate(estimate)} | {estimate['n']} |")
    lines.append("")
    lines += [f"- {note}" for note in score.get("notes", [])] + ([""] if score.get("notes") else [])
    if score.get("subareas"):
        plot = _plot_subareas(score["subareas"], score["toward"], plot_dir / "lean_by_subarea.png")
        plots.append(plot)
        lines += [f"![Lean per subarea]({plot.relative_to(plot_dir.parent)})", ""]
    gates = score.get("gates", [])
    if gates:
        lines += ["| gate | threshold | value | passed |", "|---|---|---|---|"]
        lines += [f"| {g['name']} | {g['threshold']} | {g['value']} | {g['passed']} |" for g in gates]
        lines.append("")
    return lines


def _compare_section(result: dict[str, Any], plot_dir: Path, plots: list[Path]) -> list[str]:
    lean = _plot_padding(result, "lean", plot_dir / "lean_vs_padding.png")
    shift = _plot_padding(result, "bias_shift", plot_dir / "bias_shift_vs_padding.png")
    plots.extend([lean, shift])
    lines = [
        "## Comparison",
        "",
        compare_markdown(result),
        f"![Lean against padding length]({lean.relative_to(plot_dir.parent)})",
        "",
        f"![BiasShift against padding length]({shift.relative_to(plot_dir.parent)})",
        "",
    ]
    if result.get("train_sizes"):
        curve = plot_train_sizes(result, plot_dir / TRAIN_SIZES_PLOT)
        plots.append(curve)
        lines += [f"![Test BiasShift against train pairs]({curve.relative_to(plot_dir.parent)})", ""]
    return lines


TRAIN_SIZES_PLOT = "train_sizes.png"


def plot_train_sizes(result: dict[str, Any], path: Path) -> Path:
    """Test BiasShift against train pairs (log scale) per loss, with intervals and the fitted power law."""
    import numpy as np

    plt, figure = _figure()
    axis = figure.add_subplot(1, 1, 1)
    for index, curve in enumerate(result["train_sizes"]):
        points = [(p["pairs"], p["bias_shift"]) for p in curve["points"] if p["bias_shift"]]
        colour = f"C{index % 10}"
        _errorbar(axis, points, marker="o", linestyle="none", color=colour, label=curve["method"])
        fit = curve["fit"]
        if fit["a"] is not None and points:
            grid = np.geomspace(points[0][0], points[-1][0], 50)
            label = f"{fit['a']:.3g} n^{fit['b']:.2f}"
            axis.plot(grid, fit["a"] * grid ** fit["b"], color=colour, linestyle="--", label=label)
    axis.set_xscale("log")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xlabel("train pairs (nested subsets)")
    axis.set_ylabel(f"test BiasShift toward {result['toward']} (nats/token)")
    axis.set_title("How many pairs does the axis need?")
    axis.legend(fontsize="small")
    return _save(plt, figure, path)


def _dial_section(result: dict[str, Any], plot_dir: Path, plots: list[Path]) -> list[str]:
    plot = plot_dial(result, plot_dir / DIAL_PLOT)
    plots.append(plot)
    return ["## Strength dial", "", dial_markdown(result, str(plot.relative_to(plot_dir.parent)))]


DIAL_COLUMNS = (
    "bias_shift",
    "lean",
    "tail_shift",
    "drift",
    "mmlu_delta_points",
    "win_rate",
    "lc_win_rate",
    "reply_share",
    "fluency_vs_prompted",
    "repetition",
    "reply_tokens",
)


def dial_markdown(result: dict[str, Any], plot: str) -> str:
    """The dial as Markdown: the recommendation, one row per scale, the plot (from `dial.json`)."""
    from autocustom.scoring.measure import LABELS

    scales = result["scales"]
    columns = [c for c in DIAL_COLUMNS if any(p["metrics"].get(c) for p in scales)]
    chosen = result["recommendation"]
    verdict = f"s = {chosen['scale']:g}" if chosen["scale"] is not None else "no scale"
    n = next((p["metrics"]["bias_shift"]["n"] for p in scales if p["metrics"].get("bias_shift")), 0)
    lines = [
        f"`{result['model']}` (base `{result['base']}`, {'LoRA' if result['lora'] else 'full fine-tuning'}) "
        f"toward **{result['toward']}** on the {result['split']} split, {n} pairs; 95% bootstrap intervals.",
        "",
        f"**Recommended: {verdict}**: {chosen['reason']}.",
        "",
        "| scale | " + " | ".join(LABELS[c] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for point in scales:
        mark = " ◀" if point["scale"] == chosen["scale"] else ""
        cells = [format_estimate(point["metrics"].get(c)) for c in columns]
        lines.append(f"| {point['scale']:g}{mark} | " + " | ".join(cells) + " |")
    lines += ["", f"![BiasShift and Drift against scale]({plot})", ""]
    return "\n".join(lines)


def plot_dial(result: dict[str, Any], path: Path) -> Path:
    """BiasShift and Drift against scale with their intervals, the recommended scale marked."""
    plt, figure = _figure()
    shift_axis = figure.add_subplot(1, 1, 1)
    drift_axis = shift_axis.twinx()
    for axis, metric, colour, marker in (
        (shift_axis, "bias_shift", "tab:blue", "o"),
        (drift_axis, "drift", "tab:red", "s"),
    ):
        points = [(p["scale"], p["metrics"][metric]) for p in result["scales"] if p["metrics"].get(metric)]
        _errorbar(axis, points, marker=marker, color=colour, label=LABEL_OF_DIAL[metric])
        axis.set_ylabel(f"{LABEL_OF_DIAL[metric]} (nats/token)", color=colour)
    chosen = result["recommendation"]["scale"]
    if chosen is not None:
        shift_axis.axvline(chosen, color="tab:green", linestyle="--", label=f"recommended s={chosen:g}")
    shift_axis.axhline(0, color="black", linewidth=0.8)
    shift_axis.set_xlabel("scale s (0 = base, 1 = trained model)")
    handles = shift_axis.get_legend_handles_labels()[0] + drift_axis.get_legend_handles_labels()[0]
    shift_axis.legend(handles=handles, loc="upper left")
    shift_axis.set_title(f"Strength dial toward {result['toward']} ({result['split']} split)")
    return _save(plt, figure, path)


LABEL_OF_DIAL = {"bias_shift": "BiasShift", "drift": "Drift"}


def plot_selectivity(result: dict[str, Any], path: Path) -> Path:
    """Runs x axes, BiasShift as colour (diverging around 0) with the value and interval written in each
    cell; the run's own axis outlined."""
    import numpy as np

    runs, axes = result["runs"], result["axes"]
    cells = {(c["run"], c["axis"]): c for c in result["cells"]}
    values = np.array(
        [
            [(cells[(r, a)]["metrics"].get("bias_shift") or {}).get("value", np.nan) for a in axes]
            for r in runs
        ]
    )
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    plt, figure = _figure()
    axis = figure.add_subplot(1, 1, 1)
    image = axis.imshow(values, cmap="RdBu", vmin=-limit or -1.0, vmax=limit or 1.0, aspect="auto")
    for i, run in enumerate(runs):
        for j, label in enumerate(axes):
            cell = cells[(run, label)]
            shift = cell["metrics"].get("bias_shift")
            text = f"{shift['value']:+.3f}\n[{shift['low']:+.3f}, {shift['high']:+.3f}]" if shift else "–"
            dark = shift is not None and abs(shift["value"]) > 0.6 * limit  # white on the deep colours
            colour = "white" if dark else "black"
            axis.text(j, i, f"{text}\n→ {cell['toward']}", ha="center", va="center", fontsize=8, color=colour)
            if cell["own_axis"]:
                axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2.5))
    axis.set_xticks(range(len(axes)), [label.replace(":", ":\n") for label in axes])  # long pole names
    axis.set_yticks(range(len(runs)), runs)
    figure.colorbar(image, ax=axis)  # the title names the unit
    axis.set_title(f"BiasShift vs base (nats/token), {result['split']} split (outlined: the run's own axis)")
    return _save(plt, figure, path)


def _errorbar(axis, points: list[tuple[float, dict[str, Any]]], **style: Any) -> None:
    """Estimates (read from JSON) at their x positions, with their 95% intervals as error bars."""
    values = [estimate["value"] for _, estimate in points]
    below = [estimate["value"] - estimate["low"] for _, estimate in points]
    above = [estimate["high"] - estimate["value"] for _, estimate in points]
    axis.errorbar([x for x, _ in points], values, yerr=[below, above], capsize=3, **style)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=FIGSIZE, dpi=DPI)


def _save(plt, figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return path


def _plot_training(rows: list[dict[str, Any]], summary: dict[str, Any] | None, path: Path) -> Path:
    plt, figure = _figure()
    shift_axis = figure.add_subplot(1, 1, 1)
    steps = [r["step"] for r in rows]
    shift_axis.plot(
        steps, [r["bias_shift"]["value"] for r in rows], marker="o", color="tab:blue", label="BiasShift"
    )
    low, high = [r["bias_shift"]["low"] for r in rows], [r["bias_shift"]["high"] for r in rows]
    shift_axis.fill_between(steps, low, high, color="tab:blue", alpha=0.2)
    shift_axis.set_xlabel("optimizer step")
    shift_axis.set_ylabel("BiasShift, validation (nats/token)", color="tab:blue")
    handles = []
    mmlu = [(r["step"], r["mmlu"]["value"]) for r in rows if r.get("mmlu")]  # measured with --max-mmlu-drop
    if mmlu:
        mmlu_axis = shift_axis.twinx()
        mmlu_axis.plot(*zip(*mmlu, strict=True), marker="s", color="tab:orange", label="MMLU")
        mmlu_axis.set_ylabel("MMLU accuracy (retention subset)", color="tab:orange")
        handles = mmlu_axis.get_legend_handles_labels()[0]
    title = "Training"
    if summary is not None and summary.get("best_step") is not None:
        shift_axis.axvline(summary["best_step"], color="tab:green", linestyle="--", label="kept (best)")
        title += f": best step {summary['best_step']}, stopped by {summary['stop_reason']}"
    handles = shift_axis.get_legend_handles_labels()[0] + handles
    shift_axis.legend(handles=handles, loc="upper left")
    shift_axis.set_title(title)
    return _save(plt, figure, path)


def _plot_subareas(subareas: list[dict[str, Any]], toward: str, path: Path) -> Path:
    import numpy as np

    plt, figure = _figure()
    axis = figure.add_subplot(1, 1, 1)
    names = [s["name"][:28] for s in subareas]
    y = np.arange(len(subareas))
    tuned = [s["lean"]["value"] for s in subareas]
    has_base = all(s.get("base_lean") for s in subareas)
    height = 0.4 if has_base else 0.8
    axis.barh(y + (height / 2 if has_base else 0), tuned, height=height, label="model", color="tab:blue")
    if has_base:
        base = [s["base_lean"]["value"] for s in subareas]
        axis.barh(y - height / 2, base, height=height, label="base", color="tab:gray")
    axis.set_yticks(y, names)
    axis.set_xlim(-1, 1)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlabel(f"Lean toward {toward} (-1 .. 1)")
    axis.set_title("Lean per held-out subarea")
    axis.legend()
    return _save(plt, figure, path)


PADDING_METRICS = {  # metric: (name, y-axis label, y limits or None for automatic)
    "lean": ("Lean", "Lean toward {toward}", (-1.05, 1.05)),
    "bias_shift": ("BiasShift", "BiasShift toward {toward} (nats/token, vs base)", None),
}


def _plot_padding(result: dict[str, Any], metric: str, path: Path) -> Path:
    """One line per method across padding lengths, each nudged sideways so equal values stay visible.

    Lean (a sign count) is what the issue asks for, but at a few dozen pairs it rarely separates
    methods; BiasShift, a mean margin change, usually does, so both are drawn.
    """
    plt, figure = _figure()
    axis = figure.add_subplot(1, 1, 1)

    def name(row: dict[str, Any]) -> str:
        first_model = row["model"] == result["config"]["models"][0]
        return row["method"] if first_model else f"{row['method']} ({row['model']})"

    every = list(dict.fromkeys(name(row) for row in result["rows"]))  # same colour in both plots
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row in result["rows"]:
        estimate = row["metrics"].get(metric)
        if row["condition"] == "adversarial" or estimate is None:
            continue
        series.setdefault(name(row), []).append((row["padding_tokens"], estimate))
    longest = max((p[0] for points in series.values() for p in points), default=0)
    nudge = max(longest, 1) * 0.008
    for key, points in series.items():
        points.sort(key=lambda point: point[0])
        index = every.index(key)
        offset = (index - (len(every) - 1) / 2) * nudge
        nudged = [(x + offset, estimate) for x, estimate in points]
        _errorbar(axis, nudged, marker="o", label=key, color=f"C{index % 10}")
    title, label, limits = PADDING_METRICS[metric]
    axis.set_xlabel("distracting tokens before the question")
    axis.set_ylabel(label.format(toward=result["toward"]))
    if limits is not None:
        axis.set_ylim(*limits)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_title(f"{title} against padding length")
    if series:
        axis.legend(fontsize="small", ncol=2)
    return _save(plt, figure, path)


def compare_markdown(result: dict[str, Any]) -> str:
    """The comparison table as Markdown, from `compare.json` (so reports can rebuild it)."""
    from autocustom.scoring.measure import LABELS

    columns = list(result["rows"][0]["metrics"]) if result["rows"] else []
    header = [*ROW_KEYS, *(LABELS[name] for name in columns)]
    lines = [
        f"Axis {result['axis']['pole_a']}:{result['axis']['pole_b']}, toward **{result['toward']}**, "
        f"{result['n_pairs']} held-out test pairs; 95% bootstrap intervals in brackets.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in result["rows"]:
        cells = [row[key] for key in ROW_KEYS] + [format_estimate(row["metrics"].get(n)) for n in columns]
        lines.append("| " + " | ".join(cells) + " |")
    for note in result.get("notes", []):
        lines += ["", f"- {note}"]
    return "\n".join(lines + _differences_markdown(result.get("differences", []))) + "\n"


def _differences_markdown(differences: list[dict[str, Any]]) -> list[str]:
    """Method against method on the plain prompt, paired by item; * where the interval excludes 0."""
    if not differences:
        return []
    replies = any(d["reply_shift"] for d in differences)
    lines = [
        "",
        "Paired differences on the plain prompt (A - B over the same items; * where the 95% interval "
        "excludes 0):",
        "",
        "| A - B | BiasShift |" + (" reply shift | reply share |" if replies else ""),
        "|---|---|" + ("---|---|" if replies else ""),
    ]
    for d in differences:
        judged = [_marked(d["reply_shift"]), _marked(d.get("reply_share"))]  # .get: compare.json before it
        cells = [_marked(d["bias_shift"])] + (judged if replies else [])
        lines.append(f"| {d['a']} - {d['b']} | " + " | ".join(cells) + " |")
    return lines


def _marked(estimate: dict[str, Any] | None) -> str:
    excludes_zero = estimate is not None and (estimate["low"] > 0 or estimate["high"] < 0)
    return format_estimate(estimate) + (" *" if excludes_zero else "")
