"""Thread defaults that do not oversubscribe a busy machine (no model: fast tier)."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from support.fake_engine import FakeEngine

from mental_edge.api.loading import engine_loader
from mental_edge.cli import main
from mental_edge.engine import threads as cpu


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)


def test_an_idle_machine_gets_every_core_and_no_note(two_cores):
    assert cpu.choose_threads(None, busy=0.1) == cpu.ThreadChoice(2, 2, 0.1, None)
    assert cpu.choose_threads(2, busy=0.1).note is None


def test_a_busy_machine_gets_the_free_cores_and_says_so(two_cores):
    choice = cpu.choose_threads(None, busy=1.0)
    assert choice.threads == 1 and "1.0 of 2 cores are busy" in choice.note
    assert cpu.choose_threads(None, busy=2.0).threads == 1  # never fewer than one


def test_a_given_count_is_kept_with_a_warning_when_the_load_suggests_fewer(two_cores):
    choice = cpu.choose_threads(2, busy=1.2)
    assert choice.threads == 2 and "--threads 2 may run several times slower than --threads 1" in choice.note


def test_engines_of_one_command_share_the_free_cores(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 8)
    assert cpu.choose_threads(None, engines=2, busy=0.0).threads == 4  # --ray local --ray-workers 2
    assert cpu.choose_threads(None, engines=2, busy=4.0).threads == 2
    assert cpu.choose_threads(None, engines=16, busy=0.0).threads == 1
    assert "--threads 4 may run" in cpu.choose_threads(4, engines=2, busy=3.0).note


@pytest.fixture
def spinning():
    """As many spinning processes as this process has cores: the machine is fully busy."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu.usable_cores())]
    try:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)"])  # let them start spinning
        yield len(procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_busy_cores_sees_other_processes(spinning):
    assert cpu.busy_cores() >= 0.8 * spinning


def test_doctor_and_a_run_say_when_the_load_suggests_fewer_threads(spinning, tmp_path):
    report = json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)
    assert report["cpu"]["busy"] >= 0.8 * spinning and report["cpu"]["default_threads"] == 1
    assert "busy with other work" in CliRunner().invoke(main, ["doctor"]).output
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF fake model\n")
    args = ["analyze", "-m", str(model), "--task", "DR", "--threads", "2", "--no-explain", "a post"]
    with engine_loader(lambda path, **options: FakeEngine(path, **options)):  # the machine's real load is read
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    note = result.stderr.splitlines()[0]
    assert note.startswith("mental-edge: ") and "busy with other work: --threads 2 may run" in note
    assert result.stdout.startswith("[1] DR: ")
