"""Evaluation reports: build one from per-row predictions, render it, compare two.

A report is a plain dict, saved as JSON, so that two runs (say Q8_0 and Q4_K_M of one model) can be
compared later from their files alone:

    {"data": "...", "run": {...model and sampling...},
     "tasks": {"DR": {"n", "accuracy", "weighted_f1", "macro_f1", "unparsed", "confusion"}},
     "rows": {"DR": [{"id": "1", "gold": "yes", "pred": "no"}, ...]}}

`pred` is None for an answer no rule could read (it is reported as unparsed, never as a class).
The figures come from `metrics.score`, their intervals and calibration from `stats` (each task also gets
"intervals": 95% bootstrap intervals, and "calibration": ECE and Brier where rows carry "probabilities");
this module only arranges and prints them.
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from mental_edge.errors import MentalEdgeError
from mental_edge.io.files import atomic_write_text
from mental_edge.report import explanations
from mental_edge.report.metrics import UNPARSED, score
from mental_edge.report.stats import LEVEL, RESAMPLES, SEED, bootstrap, calibration, paired_bootstrap

FIGURES = (("accuracy", "accuracy"), ("weighted_f1", "weighted F1"), ("macro_f1", "macro F1"))


def build_report(
    rows_by_task: Mapping[str, Iterable[Mapping]],
    *,
    labels_by_task: Mapping[str, Iterable[str]] | None = None,
    run: Mapping | None = None,
    data: str | None = None,
) -> dict:
    """Score each task's rows ({"id", "gold", "pred"}, and "probabilities" where the run gave them);
    `labels_by_task` fixes the label order."""
    tasks, rows = {}, {}
    for task, task_rows in rows_by_task.items():
        task_rows = [_report_row(r) for r in task_rows]
        labels = (labels_by_task or {}).get(task)
        gold, pred = [r["gold"] for r in task_rows], [r["pred"] for r in task_rows]
        labels = tuple(labels) if labels is not None else None
        tasks[task] = score(gold, pred, labels).as_dict()
        tasks[task]["intervals"] = {
            **{k: v.as_dict() for k, v in bootstrap(gold, pred, labels).items()},
            "level": LEVEL, "resamples": RESAMPLES, "seed": SEED,
        }  # fmt: skip
        tasks[task]["calibration"] = calibration(gold, pred, [r.get("probabilities") for r in task_rows])
        rows[task] = task_rows
    return {"data": data, "run": dict(run or {}), "tasks": tasks, "rows": rows}


def _report_row(row: Mapping) -> dict:
    out = {"id": str(row["id"]), "gold": row["gold"], "pred": row.get("pred")}
    if row.get("probabilities"):
        out["probabilities"] = dict(row["probabilities"])
    return out


def save_report(report: dict, stem) -> tuple[Path, Path]:
    """Write `stem.json` and `stem.md`, each whole or not at all (owner-only)."""
    stem = Path(stem)
    json_path = atomic_write_text(stem.with_name(stem.name + ".json"), render_json(report))
    md_path = atomic_write_text(stem.with_name(stem.name + ".md"), render_markdown(report))
    return json_path, md_path


def load_report(path) -> dict:
    """A report saved by `save_report`; a one-line error for anything else."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MentalEdgeError(f"{path}: no such report") from None
    except (OSError, ValueError) as exc:
        raise MentalEdgeError(f"{path}: not a readable JSON report ({exc})".replace("\n", " ")) from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict):
        raise MentalEdgeError(f"{path}: not an eval report (no 'tasks' object)")
    return report


def render_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1) + "\n"


def render_table(report: dict) -> str:
    """The report for a terminal: a summary table, then each task's confusion matrix."""
    parts = [_text_table(*_summary(report))]
    parts += [f"{title}\n\n{_text_table(*table)}" for title, table in _explanation_tables(report)]
    for task, figures in report["tasks"].items():
        parts.append(f"{task}: rows are gold labels, columns predictions")
        parts.append(_text_table(*_confusion(figures)))
    return "\n\n".join(parts) + "\n"


def render_markdown(report: dict) -> str:
    parts = ["# Evaluation report", _markdown_run(report), _markdown_table(*_summary(report))]
    parts += [f"## {title}\n\n{_markdown_table(*table)}" for title, table in _explanation_tables(report)]
    for task, figures in report["tasks"].items():
        parts.append(f"## {task}\n\nRows are gold labels, columns predictions.")
        parts.append(_markdown_table(*_confusion(figures)))
    return "\n\n".join(p for p in parts if p) + "\n"


def compare_reports(before: dict, after: dict) -> dict:
    """Per-task deltas (after minus before) and the share of rows whose predicted label changed.

    Rows are matched by id within a task; only rows present in both reports are counted.
    """
    common = [t for t in before["tasks"] if t in after["tasks"]]
    if not common:
        raise MentalEdgeError("the two reports have no task in common")
    tasks = {}
    for task in common:
        a, b = before["tasks"][task], after["tasks"][task]
        entry = {
            key: {"before": a[key], "after": b[key], "delta": b[key] - a[key]}
            for key in ("accuracy", "weighted_f1", "macro_f1", "unparsed")
        }
        before_rows, after_rows = before.get("rows", {}).get(task), after.get("rows", {}).get(task)
        entry.update(_changed_rows(before_rows, after_rows))
        entry["paired"] = _paired(before_rows, after_rows)
        entry["explanations"] = _paired_explanations(before, after, task)
        tasks[task] = entry
    return {"before": _describe(before), "after": _describe(after), "tasks": tasks}


def render_comparison(comparison: dict, markdown: bool = False) -> str:
    headers = ["task", *(f"{name} Δ" for _, name in FIGURES), "unparsed Δ", "rows", "changed"]
    rows = []
    for task, entry in comparison["tasks"].items():
        changed = "n/a" if entry["changed_share"] is None else f"{entry['changed_share']:.1%}"
        rows.append(
            [
                task,
                *(f"{entry[key]['delta']:+.4f}" for key, _ in FIGURES),
                f"{entry['unparsed']['delta']:+d}",
                str(entry["matched"]),
                changed,
            ]
        )
    title = f"{comparison['before']} → {comparison['after']}"
    table = (_markdown_table if markdown else _text_table)(headers, rows, "l" + "r" * 6)
    text = f"{'# ' if markdown else ''}{title}\n\n{table}\n"
    return text + _paired_table(comparison, markdown) + _explanation_deltas_table(comparison, markdown)


def _explanation_tables(report: dict) -> list[tuple[str, tuple[list[str], list[list[str]], str]]]:
    """Per reference set, each task's explanation scores with their intervals (reports made with a scorer)."""
    part = report.get("explanations")
    if not part:
        return []
    sets = [name for name in part["reference_sets"] if any(name in t for t in part["tasks"].values())]
    out = []
    for name in sets:
        headers = ["task", "rows", *(f"{explanations.NAMES[m]} [{LEVEL:.0%}]" for m in explanations.METRICS)]
        rows = [[task, str(t[name]["rows"]), *(_interval_text(t[name].get(m)) for m in explanations.METRICS)]
                for task, t in part["tasks"].items() if name in t]  # fmt: skip
        title = f"Explanations against the {name} references ({part['reference_sets'][name]})"
        out.append((title, (headers, rows, "l" + "r" * (len(headers) - 1))))
    judged = {task: t["consistency"] for task, t in part["tasks"].items() if t.get("consistency")}
    if judged:
        rows = [[task, str(c["rows"]), _interval_text(c["agreement"])] for task, c in judged.items()]
        title = "Label-explanation consistency (the published classifier's label of the explanation is the row's)"
        out.append((title, (["task", "rows", f"agreement [{LEVEL:.0%}]"], rows, "lrr")))
    return out


def _interval_text(interval: dict | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval['estimate']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def _paired_explanations(before: dict, after: dict, task: str) -> dict | None:
    """Paired intervals of the explanation scores' deltas (against the gold references) where both have them."""
    a, b = (r.get("explanations") or {} for r in (before, after))
    a_rows, b_rows = (a.get("rows") or {}).get(task), (b.get("rows") or {}).get(task)
    if not a_rows or not b_rows:
        return None
    return explanations.paired(a_rows, b_rows)


def _explanation_deltas_table(comparison: dict, markdown: bool) -> str:
    entries = {t: e["explanations"] for t, e in comparison["tasks"].items() if e.get("explanations")}
    if not entries:
        return ""
    first = next(iter(entries.values()))
    headers = ["task", *(f"{explanations.NAMES[m]} Δ [{LEVEL:.0%}]" for m in explanations.METRICS), "rows"]
    rows = [[task, *(_signed_interval(p[m]) if m in p else "n/a" for m in explanations.METRICS), str(p["rows"])]
            for task, p in entries.items()]  # fmt: skip
    table = (_markdown_table if markdown else _text_table)(headers, rows, "l" + "r" * (len(headers) - 1))
    return (
        f"\nExplanation scores, paired bootstrap ({first['resamples']} resamples of the rows both scored, "
        f"seed {first['seed']}):\n\n{table}\n"
    )


def _paired(before_rows, after_rows) -> dict | None:
    """Paired bootstrap intervals of each figure's delta over the rows (by id) both reports hold."""
    if not before_rows or not after_rows:
        return None
    after_by_id = {r["id"]: r for r in after_rows}
    matched = [(r, after_by_id[r["id"]]) for r in before_rows if r["id"] in after_by_id]
    if not matched:
        return None
    gold = [a["gold"] for a, _ in matched]
    intervals = paired_bootstrap(gold, [a.get("pred") for a, _ in matched], [b.get("pred") for _, b in matched])
    return {**{k: v.as_dict() for k, v in intervals.items()}, "rows": len(matched), "resamples": RESAMPLES,
            "seed": SEED}  # fmt: skip


def _paired_table(comparison: dict, markdown: bool) -> str:
    entries = {t: e["paired"] for t, e in comparison["tasks"].items() if e.get("paired")}
    if not entries:
        return ""
    first = next(iter(entries.values()))
    headers = ["task", *(f"{name} Δ [{LEVEL:.0%}]" for _, name in FIGURES), "rows"]
    rows = [[task, *(_signed_interval(p[key]) for key, _ in FIGURES), str(p["rows"])] for task, p in entries.items()]
    table = (_markdown_table if markdown else _text_table)(headers, rows, "l" + "r" * 4)
    return (
        f"\nPaired bootstrap intervals ({first['resamples']} resamples of the shared rows, seed {first['seed']}):\n\n"
        f"{table}\n"
    )


def _signed_interval(interval: dict) -> str:
    return f"{interval['estimate']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"


def _changed_rows(before_rows, after_rows) -> dict:
    if before_rows is None or after_rows is None:
        return {"matched": 0, "changed": 0, "changed_share": None}
    before_pred = {r["id"]: r.get("pred") for r in before_rows}
    matched = [(before_pred[r["id"]], r.get("pred")) for r in after_rows if r["id"] in before_pred]
    changed = sum(a != b for a, b in matched)
    return {"matched": len(matched), "changed": changed, "changed_share": changed / len(matched) if matched else None}


def _describe(report: dict) -> str:
    run = report.get("run") or {}
    name = run.get("model") or run.get("name") or "report"
    quant = run.get("quantization")
    return f"{name} ({quant})" if quant else str(name)


def _summary(report: dict) -> tuple[list[str], list[list[str]], str]:
    headers = ["task", "n", *(name for _, name in FIGURES), "unparsed"]
    rows = [
        [task, str(f["n"]), *(f"{f[key]:.4f}" for key, _ in FIGURES), str(f["unparsed"])]
        for task, f in report["tasks"].items()
    ]
    return headers, rows, "l" + "r" * 5


def _confusion(figures: dict) -> tuple[list[str], list[list[str]], str]:
    confusion = figures["confusion"]
    labels, columns = confusion["labels"], confusion["columns"]
    headers = ["gold \\ predicted", *columns]
    rows = [[label, *(str(x) for x in counts)] for label, counts in zip(labels, confusion["matrix"])]
    return headers, rows, "l" + "r" * len(columns)


def _markdown_run(report: dict) -> str:
    lines = [f"- data: `{report['data']}`"] if report.get("data") else []
    for key, value in (report.get("run") or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"- {key}: {_md_code(text)}")
    return "\n".join(lines)


def _text_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align)
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def _markdown_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    def line(cells):
        return "| " + " | ".join(_md_cell(c) for c in cells) + " |"

    rule = "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"
    return "\n".join([line(headers), rule, *map(line, rows)])


def _md_code(text: str) -> str:
    """Inline code; a backquote inside would end it early, so it becomes a quote."""
    return "`" + _md_cell(text).replace("`", "'") + "`"


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


__all__ = [
    "build_report",
    "compare_reports",
    "load_report",
    "render_comparison",
    "render_json",
    "render_markdown",
    "render_table",
    "save_report",
    "UNPARSED",
]
