"""Care notices: risk cues in text and analysis labels, crisis lines by country, a user file replacing them;
and the small parts of the chat session that need no terminal (parameters, transcripts)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mental_edge.chat import care
from mental_edge.chat.session import TRANSCRIPT_FORMAT, Params, read_transcript
from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import load_tasks


@pytest.mark.parametrize(
    "text",
    [
        "I keep thinking about suicide",
        "i want to kill myself",
        "Sometimes I just want to die.",
        "I've been self-harming again",
        "everyone would be better off dead without me",
        "我真的不想活了",
        "I cut myself last night",
        "thinking of ending it all",
    ],
)
def test_risk_cues_in_text(text):
    assert care.points_to_risk(text)


@pytest.mark.parametrize(
    "text",
    ["", "I'm stressed about my exams", "my shift ends at 9, then I cut vegetables", "I killed it at the gym today"],
)
def test_no_risk_in_ordinary_text(text):
    assert not care.points_to_risk(text)


def result(task, label):
    return SimpleNamespace(task=task, label=label)


def test_risk_from_analysis_labels_of_the_real_task_set():
    tasks = {t.name: t for t in load_tasks()}
    risky = {
        ("t-sid", "suicide or self-harm tendency"),
        ("swmh", "suicide"),
        ("Irf-belongingness", "yes"),
        ("Irf-burdensomeness", "yes"),
        ("suicide-risk", "高自杀风险"),
    }
    for name, label in risky:
        assert label in tasks[name].labels
        assert care.points_to_risk(results=[result(name, label)]), (name, label)
    for name in ("t-sid", "swmh", "DR", "Irf-belongingness", "suicide-risk", "CAMS"):
        for label in tasks[name].labels:
            if (name, label) not in risky:
                assert not care.points_to_risk(results=[result(name, label)]), (name, label)
    assert not care.points_to_risk(results=[result("DR", None)])


def test_crisis_notice_by_country_option_environment_and_fallback(monkeypatch):
    assert "988" in care.crisis_notice("us")
    assert "116 123" in care.crisis_notice("UK")
    monkeypatch.setenv("MENTAL_EDGE_COUNTRY", "AU")
    assert "13 11 14" in care.crisis_notice()
    fallback = care.crisis_notice("ZZ")
    assert "findahelpline.com" in fallback and "988" not in fallback


def test_crisis_notice_from_a_user_file(monkeypatch, isolated_home, tmp_path):
    (isolated_home / "crisis-help.txt").write_text("Call Mia at 555-0100.\n", encoding="utf-8")
    assert care.crisis_notice("US") == "Call Mia at 555-0100."
    monkeypatch.setenv("MENTAL_EDGE_CRISIS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(MentalEdgeError, match="missing.txt: cannot read"):
        care.crisis_notice()


def test_params_are_checked():
    params = Params()
    params.set("max_tokens", "32")
    params.set("top_p", "0.5")
    assert (params.max_tokens, params.top_p) == (32, 0.5)
    assert params.sampling().top_p == 0.5
    for name, value, message in [
        ("top_k", "3", "unknown parameter"),
        ("seed", "x", "takes a number"),
        ("temperature", "-1", "out of range"),
        ("max_tokens", "2.5", "takes a number"),
    ]:
        with pytest.raises(MentalEdgeError, match=message):
            params.set(name, value)


def test_transcripts_are_checked_field_by_field(tmp_path):
    path = tmp_path / "t.json"
    for content, message in [
        ("{", "not a JSON transcript"),
        ("[]", "field 'format'"),
        (json.dumps({"format": TRANSCRIPT_FORMAT, "messages": {}}), "field 'messages'"),
        (json.dumps({"format": TRANSCRIPT_FORMAT, "system": 3, "messages": []}), "field 'system'"),
    ]:
        path.write_text(content)
        with pytest.raises(MentalEdgeError, match=message):
            read_transcript(path)
    with pytest.raises(MentalEdgeError, match="cannot read"):
        read_transcript(tmp_path / "nope.json")
