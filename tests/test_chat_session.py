"""`mental-edge chat` driven through a real pseudo-terminal (pexpect) against the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

UP = "\x1b[A"
PROMPT = ">>> "


def _default_sigint():
    """A child inherits an ignored SIGINT across exec; some earlier test in the suite leaves it ignored in pytest's
    process (Ctrl-C then did nothing in the full suite only), and a user's terminal never does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(model, home, *args, country="US"):
    env = {**os.environ, "MENTAL_EDGE_HOME": str(home), "TERM": "xterm", "MENTAL_EDGE_COUNTRY": country}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mental_edge", "chat", "--model", str(model), "--threads", "1", *args],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 250),
        preexec_fn=_default_sigint,
    )
    child.expect("research tool")
    child.expect_exact(PROMPT)
    return child


def send(child, line: str) -> str:
    """Type a line, wait for the next prompt, return what was printed in between (the echo removed)."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before.split("\r\n", 1)[1] if "\r\n" in child.before else ""


def quit_(child):
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_answer_streams_and_ctrl_c_stops_it_keeping_the_session(smollm2_gguf, tmp_path):
    child = spawn(smollm2_gguf, tmp_path, "--no-history")
    send(child, "/params max_tokens 1500")
    send(child, "/params temperature 0")
    child.sendline("Write the numbers from 1 to 1000, separated by commas.")  # runs on (counting by lines ends at 20)
    child.expect(r"\r\n")  # the echo of the line
    child.expect(r"\d")  # the first piece of the answer has arrived...
    arrived = time.monotonic()
    child.sendintr()  # while the answer is being written: "[stopped]" shows only for an answer cut short
    child.expect_exact("[stopped]")
    child.expect_exact(PROMPT)
    assert time.monotonic() - arrived < 20  # 1500 tokens would take far longer than this
    # the session goes on: the conversation and the engine are intact
    send(child, "/params max_tokens 8")
    out = send(child, "Say hello.")
    assert out.strip()
    child.sendline("/save " + str(tmp_path / "t.json"))
    child.expect_exact(PROMPT)
    messages = json.loads((tmp_path / "t.json").read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[1]["content"].startswith("1")  # the partial answer was kept
    quit_(child)


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves(smollm2_gguf, tmp_path):
    child = spawn(smollm2_gguf, tmp_path, "--no-history")
    child.send("/params seed 99")
    child.expect_exact("/params seed 99")  # readline has the line: Ctrl-C must not race the typing
    child.sendintr()
    child.expect_exact(PROMPT)
    out = send(child, "/params")
    assert "seed 0" in out  # the cleared line was never run
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_history_is_recalled_in_the_next_session_and_private(smollm2_gguf, tmp_path):
    first = spawn(smollm2_gguf, tmp_path)
    send(first, "/params seed 4242")
    quit_(first)
    history = tmp_path / "chat_history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "/params seed 4242" in history.read_text()

    second = spawn(smollm2_gguf, tmp_path)
    second.send(UP + UP)  # /quit, then the /params line before it
    second.sendline("")
    second.expect_exact(PROMPT)
    assert "seed 4242" in second.before
    quit_(second)

    before = history.read_text()
    third = spawn(smollm2_gguf, tmp_path, "--no-history")
    send(third, "/params seed 7")
    quit_(third)
    assert history.read_text() == before


def test_task_mode_prints_a_label_of_the_task_with_probabilities(smollm2_gguf, tmp_path):
    from mental_edge.prompting import load_tasks

    labels = load_tasks().task("DR").labels
    child = spawn(smollm2_gguf, tmp_path, "--no-history")
    send(child, "/params max_tokens 8")
    assert "analysis mode (DR)" in send(child, "/task DR")
    out = send(child, "I have felt empty for months, I sleep all day and nothing makes me happy anymore.")
    found = re.search(r"DR: (.+?)\r\n  probabilities: (.+?)\r\n  explanation: (.*)", out)
    assert found, out
    assert found.group(1) in labels
    probs = dict((label, float(p)) for label, p in re.findall(r"\s*([^,]+?) (\d+\.\d)%", found.group(2)))
    assert set(probs) == set(labels)
    assert sum(probs.values()) == pytest.approx(100, abs=0.2)
    assert max(probs, key=probs.get) == found.group(1)
    assert "conversation mode" in send(child, "/chat")
    quit_(child)


def test_save_writes_an_owner_only_transcript_that_load_restores(smollm2_gguf, tmp_path):
    child = spawn(smollm2_gguf, tmp_path, "--no-history")
    send(child, "/params max_tokens 4")
    send(child, "/system You answer in one word.")
    child.sendline('"""')
    child.sendline("first line")
    child.sendline('second line"""')
    child.expect_exact(PROMPT)
    child.send("\x1b[200~pasted one\npasted two\x1b[201~")  # a terminal's bracketed paste, then Enter
    send(child, "")
    path = tmp_path / "talk.json"
    assert "readable by you only" in send(child, f"/save {path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["system"] == "You answer in one word."
    assert data["messages"][0] == {"role": "user", "content": "first line\nsecond line"}
    assert data["messages"][2] == {"role": "user", "content": "pasted one\npasted two"}
    assert send(child, "/reset").startswith("conversation cleared")
    assert "loaded 4 messages" in send(child, f"/load {path}")
    path.write_text('{"format": "mental-edge-chat-transcript/1", "messages": [{"role": "root"}]}')
    assert "messages[0] needs a role" in send(child, f"/load {path}")
    quit_(child)


def test_context_overflow_drops_the_oldest_turns_with_a_notice(smollm2_gguf, tmp_path):
    child = spawn(smollm2_gguf, tmp_path, "--no-history", "--ctx", "160")
    send(child, "/params max_tokens 16")
    long_message = "Tell me about the weather in spring, summer, autumn and winter in a small mountain town."
    outs = [send(child, long_message) for _ in range(5)]
    notices = [o for o in outs if "context full: dropped the" in o]
    assert notices and "context full" not in outs[0]
    assert "system prompt is kept" in notices[0]
    child.sendline(f"/save {tmp_path / 't.json'}")
    child.expect_exact(PROMPT)
    assert len(json.loads((tmp_path / "t.json").read_text())["messages"]) < 10
    quit_(child)


def test_unknown_command_lists_the_real_ones_and_risk_shows_the_crisis_notice(smollm2_gguf, tmp_path):
    child = spawn(smollm2_gguf, tmp_path, "--no-history", country="GB")
    out = send(child, "/frobnicate")
    assert "Unknown command /frobnicate" in out
    for command in ("/help", "/task", "/chat", "/system", "/reset", "/params", "/model", "/save", "/load", "/quit"):
        assert command in out
    assert "history" in send(child, "/help")
    send(child, "/params max_tokens 4")
    assert "116 123" in send(child, "Sometimes I think about ending my life.")
    assert "116 123" not in send(child, "What a lovely day for a walk.")
    quit_(child)


def test_cli_says_how_to_get_a_model_when_the_store_is_empty_and_names_a_bad_task(smollm2_gguf):
    from click.testing import CliRunner

    from mental_edge.cli import main

    result = CliRunner().invoke(main, ["chat"])
    assert result.exit_code == 1 and "holds no model" in result.output and "mental-edge pull" in result.output
    result = CliRunner().invoke(main, ["chat", "--model", str(smollm2_gguf), "--task", "nosuchtask"])
    assert result.exit_code == 1 and "Error: unknown task 'nosuchtask'" in result.output
    assert "Traceback" not in result.output
