"""Eval reports: figures checked against scikit-learn, rendered the same in every format, saved
whole and owner-only, and compared row by row."""

import json
import os
import random
import stat

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from mental_edge.errors import MentalEdgeError
from mental_edge.report.eval_report import (
    build_report,
    compare_reports,
    load_report,
    render_comparison,
    render_markdown,
    render_table,
    save_report,
)

LABELS = ("no reason", "bias or abuse", "jobs and career")


def _rows(seed, n=80, unparsed=5):
    rng = random.Random(seed)
    rows = [{"id": str(i), "gold": rng.choice(LABELS), "pred": rng.choice(LABELS)} for i in range(n)]
    for row in rng.sample(rows, unparsed):
        row["pred"] = None
    return rows


def test_figures_match_scikit_learn():
    rows = _rows(1)
    report = build_report({"CAMS": rows}, labels_by_task={"CAMS": LABELS})
    figures = report["tasks"]["CAMS"]
    gold = [r["gold"] for r in rows]
    pred = [r["pred"] or "(unparsed)" for r in rows]  # sklearn: unparsed as its own wrong class
    classes = list(LABELS)
    assert figures["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert figures["weighted_f1"] == pytest.approx(f1_score(gold, pred, labels=classes, average="weighted"))
    assert figures["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=classes, average="macro"))
    expected = confusion_matrix(gold, pred, labels=[*classes, "(unparsed)"])[: len(classes)]
    assert figures["confusion"]["matrix"] == expected.tolist()
    assert figures["unparsed"] == 5 and figures["n"] == 80


def test_table_and_markdown_show_every_figure():
    report = build_report(
        {"CAMS": _rows(2), "DR": [{"id": 1, "gold": "yes", "pred": "no"}]},
        run={"model": "m", "sampling": {"temperature": 0}},
        data="imhi",
    )
    table, markdown = render_table(report), render_markdown(report)
    for task, figures in report["tasks"].items():
        summary = [
            task,
            str(figures["n"]),
            f"{figures['accuracy']:.4f}",
            f"{figures['weighted_f1']:.4f}",
            f"{figures['macro_f1']:.4f}",
            str(figures["unparsed"]),
        ]
        assert summary in [line.split("  ") for line in _squeeze(table)]
        assert "| " + " | ".join(summary) + " |" in markdown
        for label, counts in zip(figures["confusion"]["labels"], figures["confusion"]["matrix"]):
            assert "| " + " | ".join([label, *map(str, counts)]) + " |" in markdown
    assert '- sampling: `{"temperature": 0}`' in markdown


def _squeeze(table):
    """Table lines with runs of spaces collapsed to two, so cells can be split out."""
    import re

    return [re.sub(r" {2,}", "  ", line.strip()) for line in table.splitlines()]


def test_save_and_load_round_trip_owner_only(tmp_path):
    report = build_report({"DR": [{"id": 1, "gold": "yes", "pred": "yes"}]})
    json_path, md_path = save_report(report, tmp_path / "q8")
    assert (json_path.name, md_path.name) == ("q8.json", "q8.md")
    assert load_report(json_path) == report
    assert md_path.read_text() == render_markdown(report)
    assert stat.S_IMODE(os.stat(json_path).st_mode) == 0o600


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such report"),
        ("{not json", "not a readable JSON report"),
        (json.dumps({"rows": {}}), "not an eval report"),
    ],
)
def test_load_report_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MentalEdgeError, match=message) as err:
        load_report(path)
    assert "\n" not in str(err.value)


def test_compare_deltas_and_changed_rows():
    gold = ["yes", "no", "no", "yes"]
    before = build_report(
        {
            "DR": [{"id": i, "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, ["yes", "no", None, "no"]))],
            "SAD": [{"id": 0, "gold": "school", "pred": "school"}],
        },
        run={"model": "M", "quantization": "Q8_0"},
    )
    after = build_report(
        {
            "DR": [{"id": i, "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, ["yes", "yes", None, "yes"]))][
                ::-1
            ]
        },
        run={"model": "M", "quantization": "Q4_K_M"},
    )
    result = compare_reports(before, after)
    assert list(result["tasks"]) == ["DR"]  # only tasks in both reports
    dr = result["tasks"]["DR"]
    assert dr["accuracy"]["delta"] == pytest.approx(0.5 - 0.5)
    assert dr["unparsed"]["delta"] == 0
    assert (dr["matched"], dr["changed"], dr["changed_share"]) == (4, 2, 0.5)  # ids 1 and 3
    text = render_comparison(result)
    assert "M (Q8_0) → M (Q4_K_M)" in text and "50.0%" in text
    assert "| DR |" in render_comparison(result, markdown=True)


def test_compare_without_common_tasks_is_an_error():
    a = build_report({"DR": [{"id": 1, "gold": "yes", "pred": "yes"}]})
    b = build_report({"SAD": [{"id": 1, "gold": "school", "pred": "school"}]})
    with pytest.raises(MentalEdgeError, match="no task in common"):
        compare_reports(a, b)


def test_compare_command(tmp_path):
    from click.testing import CliRunner

    from mental_edge.cli import main

    rows = [{"id": 1, "gold": "yes", "pred": "yes"}, {"id": 2, "gold": "no", "pred": "yes"}]
    save_report(build_report({"DR": rows}, run={"model": "A"}), tmp_path / "a")
    rows[1]["pred"] = "no"
    save_report(build_report({"DR": rows}, run={"model": "B"}), tmp_path / "b")
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "A → B" in result.output and "+0.5000" in result.output and "50.0%" in result.output
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "x.json")])
    assert result.exit_code == 1 and "Error: " in result.output and "no such report" in result.output
    assert "Traceback" not in result.output
