"""One self-contained HTML page for one or more runs: inline CSS and SVG, a few lines of inline script, no network.

The page's Content-Security-Policy forbids every fetch, so it opens the same on an air-gapped machine and
cannot call out even if a figure or a record held a link. Everything from a record (ids, labels,
explanations, post text) is HTML-escaped: text is shown, never interpreted. Post text appears only when the
caller passes `include_text` (the CLI's --include-text).
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone

from mental_edge.io.files import atomic_write_text
from mental_edge.io.lock import hold_output
from mental_edge.report import charts as figures
from mental_edge.report import explanations
from mental_edge.report.metrics import UNPARSED
from mental_edge.report.runs import Run, name_runs
from mental_edge.report.stats import LEVEL, RESAMPLES, SEED
from mental_edge.report.summary import IDS_SHOWN, Comparison, TaskSummary, compare_runs, summarise_run
from mental_edge.version import __version__

METRIC_NAMES = {"accuracy": "accuracy", "weighted_f1": "weighted F1", "macro_f1": "macro F1"}
SETTINGS_FIRST = ("model", "model_sha256", "quantization", "architecture", "engine", "mode", "prompt_format")
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
h1{font-size:1.5em}h2{border-bottom:2px solid #4c72b0;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}th{background:#f3f5f9}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0}
figure svg{max-width:100%;height:auto}.note{background:#fff4d6;border-left:4px solid #e0a800;padding:.3em .8em}
.ids{font-family:monospace;word-break:break-all}.muted{color:#666}code{font-size:.92em}
blockquote{margin:.3em 0 .8em 1em;padding-left:.6em;border-left:3px solid #ccc;white-space:pre-wrap}
"""
SCRIPT = """
document.getElementById('expand').addEventListener('click', function () {
  var all = document.querySelectorAll('details');
  var open = !Array.prototype.every.call(all, function (d) { return d.open; });
  all.forEach(function (d) { d.open = open; });
});
"""


def write_page(runs: list[Run], output, **options) -> int:
    """Render the page for `runs` and write it whole, owner-only, to `output`; returns its size in bytes."""
    figures.require()
    with hold_output(output):  # one writer per page, like every output
        page = render_report(runs, **options)
        atomic_write_text(output, page)
    return len(page.encode("utf-8"))


def render_report(runs: list[Run], *, include_text: bool = False, resamples: int = RESAMPLES, seed: int = SEED) -> str:
    """The whole page for `runs`; two or more are also compared, each against the first."""
    name_runs(runs)
    summaries = [summarise_run(run, resamples=resamples, seed=seed) for run in runs]
    parts = [_head(runs, include_text)]
    if len(runs) > 1:
        parts.append(_overview(runs, summaries))
        for other in runs[1:]:
            parts.append(_comparison(runs[0], other, resamples, seed))
    for run, summary in zip(runs, summaries):
        parts.append(_run_section(run, summary, include_text))
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>mental-edge report: {_e(', '.join(r.name for r in runs))}</title><style>{STYLE}</style></head>",
            "<body>",
            *parts,
            f"<script>{SCRIPT}</script></body></html>\n",
        ]
    )


def _head(runs: list[Run], include_text: bool) -> str:
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "included (--include-text)" if include_text else "not included (pass --include-text to show it)"
    return (
        f"<h1>mental-edge report</h1><p>{len(runs)} run{'s' * (len(runs) > 1)}: "
        + ", ".join(f"<code>{_e(r.name)}</code>" for r in runs)
        + f". Made {made} by mental-edge {__version__} on this machine; nothing in it was fetched or sent. "
        f"Post text: {text}. For non-clinical research only.</p>"
        f"<p class=muted>Intervals: {LEVEL:.0%} percentile bootstrap; the resamples and seed are stated with each "
        "table. <button id=expand type=button>expand / collapse all</button></p>"
    )


def _run_section(run: Run, summary: dict[str, TaskSummary], include_text: bool) -> str:
    parts = [f"<h2>Run <code>{_e(run.name)}</code> <span class=muted>({_e(run.kind)})</span></h2>"]
    parts.append(_settings(run, summary))
    for task in summary.values():
        parts.append(_task_section(task, include_text))
    return "<section>" + "".join(parts) + "</section>"


def _settings(run: Run, summary: dict[str, TaskSummary]) -> str:
    keys = [k for k in SETTINGS_FIRST if k in run.settings] + [k for k in run.settings if k not in SETTINGS_FIRST]
    rows = [(k, run.settings[k]) for k in keys]
    rows += [(f"template_sha256 ({t.task})", ", ".join(t.template_hashes)) for t in summary.values()
             if t.template_hashes]  # fmt: skip
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(_value(v))}</code></td></tr>" for k, v in rows)
    note = _notes([f"settings differ between records: {', '.join(run.varying)} (the first record's are shown)"]
                  if run.varying else [])  # fmt: skip
    return f"<h3>Run settings</h3>{note}<table>{body or '<tr><td>none recorded</td></tr>'}</table>"


def _task_section(task: TaskSummary, include_text: bool) -> str:
    figs = [_figure(figures.label_distribution(task.label_counts, UNPARSED), "label distribution")]
    if task.chosen:
        figs.append(_figure(figures.probability_histogram(task.chosen), "chosen label's probability"))
    parts = [f"<h3>Task {_e(task.task)} <span class=muted>({task.rows} rows)</span></h3>", _notes(task.notes)]
    shares = [[k, v, f"{v / task.rows:.1%}"] for k, v in task.label_counts.items()]
    parts.append(_table(["label", "rows", "share"], shares))
    if task.gold:
        parts.append(_gold(task.gold, figs))
    elif not task.chosen:
        parts.append(_notes(["no label probabilities in these records (free answers or an eval report without them)"]))
    parts.append(_explanation_scores(task, figs))
    parts.append(f"<div class=figs>{''.join(figs)}</div>")
    parts.append(_flagged(task.flagged))
    parts.append(_examples(task, include_text))
    return "".join(parts)


def _gold(gold: dict, figs: list[str]) -> str:
    scores, intervals = gold["scores"], gold["intervals"]
    rows = [[METRIC_NAMES[k], f"{v['estimate']:.4f}", _bounds(v)] for k, v in intervals.items()]
    confusion = scores["confusion"]
    figs.append(_figure(figures.confusion_heatmap(confusion["labels"], confusion["columns"], confusion["matrix"]),
                        "confusion matrix"))  # fmt: skip
    calib = gold["calibration"]
    calib_text = "no label probabilities: no calibration figures"
    if calib["ece"] is not None:
        figs.append(_figure(figures.reliability_diagram(calib["reliability"], calib["ece"], calib["brier"]),
                            "reliability diagram"))  # fmt: skip
        calib_text = (f"ECE {calib['ece']:.4f} ({calib['bins']} equal-width bins), Brier score {calib['brier']:.4f}, "
                      f"over {calib['rows']} rows with probabilities")  # fmt: skip
        if calib["without_probabilities"]:
            calib_text += f"; {calib['without_probabilities']} rows without"
    return (
        f"<p>Scored on {gold['rows']} rows with gold labels; {scores['unparsed']} unparsed answers count as wrong. "
        f"{LEVEL:.0%} bootstrap intervals from {gold['resamples']} resamples (seed {gold['seed']}).</p>"
        + _table(["metric", "value", f"{LEVEL:.0%} interval"], rows)
        + f"<p>Calibration: {_e(calib_text)}.</p>"
    )


def _explanation_scores(task: TaskSummary, figs: list[str]) -> str:
    """Each reference set's explanation scores with intervals, and the per-row BARTScore distribution."""
    if not task.explanations:
        return ""
    parts = ["<h4>Explanation scores</h4>"]
    for name, summary in task.explanations.items():
        if name not in (task.reference_sets or {}):
            continue
        rows = [[explanations.NAMES[m], f"{summary[m]['estimate']:.4f}", _bounds(summary[m])]
                for m in explanations.METRICS if m in summary]  # fmt: skip
        what = (task.reference_sets or {}).get(name) or name
        parts.append(f"<p>Against the <b>{_e(name)}</b> references ({_e(what)}): {summary['rows']} rows, "
                     f"{summary['resamples']} resamples (seed {summary['seed']}).</p>")  # fmt: skip
        parts.append(_table(["metric", "value", f"{LEVEL:.0%} interval"], rows))
    judged = task.explanations.get("consistency")
    if judged:
        agreement = judged["agreement"]
        parts.append(f"<p>Label-explanation consistency: on {judged['rows']} rows the published classifier gives the "
                     f"explanation the row's own label {agreement['estimate']:.1%} of the time "
                     f"[{agreement['low']:.1%}, {agreement['high']:.1%}].</p>")  # fmt: skip
    if task.bart_scores:
        figs.append(_figure(figures.score_distribution({"this run": task.bart_scores}, "BARTScore"),
                            "explanation score distribution"))  # fmt: skip
    return "".join(parts)


def _flagged(flagged: dict[str, list[str]]) -> str:
    if not flagged:
        return "<p>No flagged, unparsed or truncated rows.</p>"
    return "<h4>Flagged rows by id</h4>" + "".join(
        f"<details><summary>{_e(kind)}: {len(ids)} rows</summary>{_ids(ids)}</details>" for kind, ids in flagged.items()
    )


def _examples(task: TaskSummary, include_text: bool) -> str:
    if not task.examples:
        return ""
    parts = ["<h4>A few explanations per label</h4>"]
    for label, rows in task.examples.items():
        items = []
        for row in rows:
            post = f"<blockquote class=post>{_e(row.text)}</blockquote>" if include_text and row.text else ""
            explanation = f"<blockquote>{_e(row.explanation)}</blockquote>"
            items.append(f"<li>row <code>{_e(row.id)}</code>: {post}{explanation}</li>")
        parts.append(f"<details><summary>{_e(label)} ({len(rows)})</summary><ul>{''.join(items)}</ul></details>")
    return "".join(parts)


def _overview(runs: list[Run], summaries: list[dict[str, TaskSummary]]) -> str:
    """Each task's weighted F1 (interval) and unparsed count, one column a run."""
    tasks = [t for t in summaries[0] if t != "-" and any(t in s for s in summaries[1:])]
    rows = []
    for task in tasks:
        cells = [task]
        for summary in summaries:
            t = summary.get(task)
            if t is None or t.gold is None:
                cells.append("n/a" if t is None else f"{t.rows} rows, no gold")
                continue
            w = t.gold["intervals"]["weighted_f1"]
            cells.append(f"{w['estimate']:.4f} {_bounds(w)}, {t.gold['scores']['unparsed']} unparsed")
        rows.append(cells)
    return "<h2>Side by side: weighted F1 [95% interval]</h2>" + _table(["task", *(r.name for r in runs)], rows)


def _comparison(before: Run, after: Run, resamples: int, seed: int) -> str:
    comparisons, notes = compare_runs(before, after, resamples=resamples, seed=seed)
    head = f"<h2>{_e(before.name)} → {_e(after.name)}</h2>" + _notes(notes)
    if not comparisons:
        return head + _notes(["the runs have no task in common"])
    rows, points, details = [], [], []
    for c in comparisons:
        rows.append(_comparison_row(c))
        for key, name in METRIC_NAMES.items():
            if c.deltas:
                d = c.deltas["intervals"][key]
                points.append((f"{c.task} {name}", d["estimate"], d["low"], d["high"]))
        details.append(_notes([f"{c.task}: {note}" for note in c.notes]))
        if c.changed_ids:
            details.append(f"<details><summary>{_e(c.task)}: {len(c.changed_ids)} rows changed label</summary>"
                           f"{_ids(c.changed_ids)}</details>")  # fmt: skip
    headers = ["task", "shared rows", "same label", "changed", "mean Δp", "largest Δp (row)",
               *(f"Δ {n} [95%]" for n in METRIC_NAMES.values())]  # fmt: skip
    fig = _figure(figures.delta_intervals(points, "metric deltas"), "metric deltas") if points else ""
    resampled = next((c.deltas for c in comparisons if c.deltas), None)
    how = (f"<p class=muted>Paired bootstrap over the shared rows with gold: {resampled['resamples']} resamples "
           f"(seed {resampled['seed']}). Δp: per row, the largest change of any label's probability.</p>"
           if resampled else "")  # fmt: skip
    return (head + _table(headers, rows) + how + f"<div class=figs>{fig}</div>" + "".join(details)
            + _explanation_comparison(before, after, comparisons))  # fmt: skip


def _explanation_comparison(before: Run, after: Run, comparisons: list[Comparison]) -> str:
    """Explanation-score deltas (paired intervals) per task, and each task's per-row BARTScores of both runs."""
    scored = [c for c in comparisons if c.explanation_deltas]
    if not scored:
        return ""
    headers = ["task", "rows", *(f"Δ {explanations.NAMES[m]} [95%]" for m in explanations.METRICS)]
    rows = [[c.task, str(c.explanation_deltas["rows"]),
             *(f"{d['estimate']:+.4f} {_bounds(d, '+')}" if (d := c.explanation_deltas.get(m)) else "n/a"
               for m in explanations.METRICS)] for c in scored]  # fmt: skip
    figs = []
    for c in scored:
        a = [r.scores["bart_score"] for r in before.tasks[c.task] if r.scores]
        b = [r.scores["bart_score"] for r in after.tasks[c.task] if r.scores]
        svg = figures.score_distribution({before.name: a, after.name: b}, f"{c.task} BARTScore")
        figs.append(_figure(svg, f"{c.task} explanation score distribution"))
    first = scored[0].explanation_deltas
    return (
        "<h3>Explanation scores (against the gold references)</h3>"
        + _table(headers, rows)
        + f"<p class=muted>Paired bootstrap over the rows both runs scored: {first['resamples']} resamples "
        f"(seed {first['seed']}). BARTScore: mean log-likelihood per token of the reference given the explanation "
        "(higher is better); BLEU: corpus BLEU of the task's rows.</p>" + f"<div class=figs>{''.join(figs)}</div>"
    )


def _comparison_row(c: Comparison) -> list[str]:
    change = c.probability_change
    cells = [
        c.task,
        str(c.shared),
        "n/a" if c.agreement is None else f"{c.agreement:.1%}",
        str(len(c.changed_ids)),
        "n/a" if not change else f"{change['mean']:.4f}",
        "n/a" if not change else f"{change['max']:.4f} ({change['max_id']})",
    ]
    for key in METRIC_NAMES:
        d = c.deltas["intervals"][key] if c.deltas else None
        cells.append("n/a" if d is None else f"{d['estimate']:+.4f} {_bounds(d, '+')}")
    return cells


def _bounds(interval: dict, sign: str = "") -> str:
    return f"[{interval['low']:{sign}.4f}, {interval['high']:{sign}.4f}]"


def _figure(svg: str, caption: str) -> str:
    return f'<figure class=fig data-name="{_e(caption)}">{svg}</figure>'


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i else ''}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _ids(ids: list[str]) -> str:
    more = f" … and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else ""
    return f"<p class=ids>{_e(', '.join(ids[:IDS_SHOWN]))}{more}</p>"


def _notes(notes: list[str]) -> str:
    return "".join(f"<p class=note>{_e(n)}</p>" for n in notes)


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)
