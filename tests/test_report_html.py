"""`mental-edge report`: pages for real analyze outputs (the CLI on FakeEngine over IMHI rows), their figures
checked against stats.py and sklearn on the records read back here, bad input as one line, and the page rendered
in headless Chromium (no script error, every figure drawn, a screenshot at SCREENSHOT for a person to look at)."""

import base64
import csv
import json
import re
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from sklearn.metrics import f1_score
from support.cli import one_error_line, run

from mental_edge.report.stats import bootstrap

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(tempfile.gettempdir()) / "mental-edge-report.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROWS_PER_TASK = 40


@pytest.fixture
def imhi_input(imhi_dir, tmp_path):
    """A small IMHI query file with DR (two classes) and CAMS (six) rows, as eval and analyze read them."""
    path = tmp_path / "imhi.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["query", "gpt-3.5-turbo"])
        for name in ("DR", "CAMS"):
            with (imhi_dir / "test_instruction" / f"{name}.csv").open(newline="") as source:
                writer.writerows(list(csv.reader(source))[1 : ROWS_PER_TASK + 1])
    return path


def analyze(fake_models, source, out, salt=""):
    fake_models.options["salt"] = salt  # another salt is another model (tests/support/fake_engine.py)
    result = run("analyze", "-m", fake_models.path, "-i", source, "--max-tokens", "12", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def report(*args):
    result = run("report", *args)
    assert result.exit_code == 0, result.output
    return result


def text_of(page: Path) -> str:
    return re.sub(r"<[^>]+>", " ", page.read_text())


# -- one run ------------------------------------------------------------------------------------------------


def test_a_page_for_an_imhi_run_holds_the_intervals_stats_gives_its_records(fake_models, imhi_input, tmp_path):
    out = analyze(fake_models, imhi_input, tmp_path / "run.jsonl")
    page = tmp_path / "report.html"
    report(out, "-o", page, "--resamples", "300", "--seed", "4")
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    html = page.read_text()
    for task in ("DR", "CAMS"):
        rows = [r for r in records(out) if r["task"] == task]
        assert len(rows) == ROWS_PER_TASK and all(r["gold"] for r in rows)
        gold, pred = [r["gold"] for r in rows], [r["label"] for r in rows]
        got = bootstrap(gold, pred, resamples=300, seed=4)["weighted_f1"]
        present = sorted(set(gold) | {p for p in pred if p})
        assert got.estimate == pytest.approx(f1_score(gold, pred, labels=present, average="weighted"))
        assert f"{got.estimate:.4f}</td><td class=n>[{got.low:.4f}, {got.high:.4f}]" in html
    assert html.count("300 resamples (seed 4)") == 2
    for figure in ("label distribution", "chosen label&#x27;s probability", "confusion matrix", "reliability diagram"):
        assert html.count(f'data-name="{figure}"') == 2
    assert re.search(r"ECE \d\.\d{4} \(10 equal-width bins\), Brier score \d\.\d{4}", html)
    assert not re.search(r'(src|href)="(?!#|data:)', html) and "<link" not in html  # nothing to fetch
    assert set(re.findall(r"https?://[^\s\"']+", html)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    for key in ("model_sha256", "quantization", "template_sha256 (DR)", "n_ctx"):
        assert f"<th>{key}</th>" in html


def test_post_text_appears_only_with_include_text(fake_models, imhi_input, tmp_path):
    out = analyze(fake_models, imhi_input, tmp_path / "run.csv")
    posts = [r[0] for r in csv.reader(imhi_input.open(newline=""))][1:]
    snippet = re.search(r'Consider this post: "(.{40})', posts[0]).group(1)
    plain, with_text = tmp_path / "plain.html", tmp_path / "text.html"
    report(out, "-o", plain)
    assert snippet not in text_of(plain) and "Post text: not included" in plain.read_text()
    one_error_line(run("report", out, "-o", tmp_path / "x.html", "--include-text"), "--data")
    report(out, "-o", with_text, "--include-text", "--data", imhi_input)
    assert snippet.replace('"', "&quot;") in with_text.read_text().replace("&#x27;", "'")


def test_record_text_is_escaped_never_markup(fake_models, tmp_path):
    out = tmp_path / "run.jsonl"
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "-o", out, "--max-tokens", "4", "a post")
    assert result.exit_code == 0, result.output
    record = records(out)[0]
    record["id"], record["explanation"] = "<img src=x onerror=alert(1)>", "</blockquote><script>alert(1)</script>"
    out.write_text(json.dumps(record) + "\n")
    page = tmp_path / "r.html"
    report(out, "-o", page)
    html = page.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_records_without_gold_and_a_one_class_task_get_notes_not_errors(fake_models, imhi_input, tmp_path):
    out = tmp_path / "posts.jsonl"
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "-o", out, "--max-tokens", "4", "a post")
    assert result.exit_code == 0, result.output
    page = tmp_path / "r.html"
    report(out, "-o", page)
    assert "no gold labels: accuracy, F1 and calibration need them" in page.read_text()
    one_class = tmp_path / "one.jsonl"
    rows = [dict(r, gold="no") for r in records(analyze(fake_models, imhi_input, tmp_path / "run.jsonl"))]
    one_class.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task"] == "DR"))
    report(one_class, "-o", page)
    assert "every gold label is &#x27;no&#x27;: F1 and its intervals say little" in page.read_text()


def test_gold_labels_from_a_column_of_the_input(fake_models, tmp_path):
    source = tmp_path / "posts.csv"
    source.write_text("id,text,mine\n1,I cannot sleep,yes\n2,A nice walk,no\n3,Everything is grey,yes\n")
    out = tmp_path / "run.jsonl"
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "-i", source, "--id-column", "id", "-o", out)
    assert result.exit_code == 0, result.output
    page = tmp_path / "r.html"
    report(out, "-o", page, "--data", source, "--gold-column", "mine", "--id-column", "id")
    assert "Scored on 3 rows with gold labels" in page.read_text()
    one_error_line(run("report", out, "-o", page, "--data", source, "--gold-column", "nope"), str(source), "'nope'")
    own = tmp_path / "own.jsonl"  # or a column of the records themselves
    own.write_text("".join(json.dumps(dict(r, mine=g)) + "\n" for r, g in zip(records(out), ["yes", "no", "yes"])))
    report(own, "-o", page, "--gold-column", "mine")
    assert "Scored on 3 rows with gold labels" in page.read_text()


def test_flagged_unparsed_and_truncated_rows_are_listed_by_id(fake_models, imhi_input, tmp_path):
    rows = records(analyze(fake_models, imhi_input, tmp_path / "run.jsonl"))
    rows[0].update(label=None, probabilities=None, flags=["unparsed"])
    rows[1]["flags"] = ["truncated"]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = tmp_path / "r.html"
    report(edited, "-o", page)
    html = page.read_text()
    assert f"<summary>unparsed: 1 rows</summary><p class=ids>{rows[0]['id']}</p>" in html
    assert f"<summary>truncated: 1 rows</summary><p class=ids>{rows[1]['id']}</p>" in html


# -- bad input ----------------------------------------------------------------------------------------------


def test_what_is_not_mental_edge_output_is_one_line_naming_the_file(imhi_input, tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x00\xff\xfe binary\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "a post"}\n')
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text('{"text": "a post"}\n')
    for path, words in (
        (imhi_input, ["line 2", "'id'"]),
        (junk, ["line 1", "not JSON"]),
        (empty, ["no records"]),
        (other, ["line 1", "'id'"]),
        (not_a_report, ["not an eval report"]),
        (tmp_path / "missing.jsonl", ["no such file"]),
        (tmp_path / "notes.txt", ["no such file"]),
    ):
        one_error_line(run("report", path, "-o", tmp_path / "r.html"), str(path), *words)
    (tmp_path / "notes.txt").write_text("hello\n")
    one_error_line(run("report", tmp_path / "notes.txt", "-o", tmp_path / "r.html"), "not mental-edge output")
    assert not (tmp_path / "r.html").exists()


def test_without_matplotlib_the_command_says_what_to_install(fake_models, tmp_path, monkeypatch):
    out = tmp_path / "run.jsonl"
    assert run("analyze", "-m", fake_models.path, "--task", "DR", "-o", out, "a post").exit_code == 0
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib now fails
    one_error_line(run("report", out, "-o", tmp_path / "r.html"), "pip install 'mental-edge[report]'")


def test_eval_without_matplotlib_still_writes_its_reports_and_says_what_to_install(fake_models, imhi_input, tmp_path,
                                                                                   monkeypatch):  # fmt: skip
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = run("eval", "-m", fake_models.path, "--data", imhi_input, "--limit", "5", "--report", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").exists() and (tmp_path / "r.md").exists() and not (tmp_path / "r.html").exists()
    (line,) = [line for line in result.output.splitlines() if "r.html not written" in line]
    assert "pip install 'mental-edge[report]'" in line


# -- several runs -------------------------------------------------------------------------------------------


def test_a_run_compared_with_itself_agrees_fully_with_zero_deltas(fake_models, imhi_input, tmp_path):
    out = analyze(fake_models, imhi_input, tmp_path / "run.jsonl")
    page = tmp_path / "self.html"
    report(out, out, "-o", page, "--resamples", "200")
    html = page.read_text()
    zero = "+0.0000 [+0.0000, +0.0000]"
    for task in ("DR", "CAMS"):
        assert f"<td>{task}</td><td class=n>{ROWS_PER_TASK}</td><td class=n>100.0%</td><td class=n>0</td>" in html
    assert html.count(zero) == 6 and "rows changed label" not in html


def test_two_models_over_partly_shared_rows_compare_the_shared_ones(fake_models, imhi_input, tmp_path):
    before = analyze(fake_models, imhi_input, tmp_path / "before.jsonl")
    after = analyze(fake_models, imhi_input, tmp_path / "after.csv", salt="another model")
    kept = tmp_path / "fewer.jsonl"
    rows = records(before)
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows[5:]))
    page = tmp_path / "compare.html"
    report(kept, after, "-o", page, "--resamples", "200")
    html = page.read_text()
    assert "the runs share 35 of their rows (35 in" in html and "only the shared rows are compared" in html
    b = {(r["id"], r["task"]): r["label"] for r in rows[5:]}
    with after.open(newline="") as handle:
        a = {(r["id"], r["task"]): r["label"] or None for r in csv.DictReader(handle)}
    changed_dr = sum(b[k] != a[k] for k in b if k[0] and k[1] == "DR" and k in a)
    assert f"DR: {changed_dr} rows changed label" in html if changed_dr else "DR: " not in html
    assert "Side by side: weighted F1" in html and html.count('data-name="metric deltas"') == 1


def test_eval_writes_the_html_page_and_intervals_and_compare_prints_them(fake_models, imhi_input, tmp_path):
    stems = [tmp_path / "q8", tmp_path / "q4"]
    for stem, salt in zip(stems, ("", "q4")):
        fake_models.options["salt"] = salt
        result = run("eval", "-m", fake_models.path, "--data", imhi_input, "--report", stem)
        assert result.exit_code == 0, result.output
    saved = json.loads(stems[0].with_suffix(".json").read_text())
    dr = saved["tasks"]["DR"]
    gold = [r["gold"] for r in saved["rows"]["DR"]]
    pred = [r["pred"] for r in saved["rows"]["DR"]]
    want = bootstrap(gold, pred, saved["tasks"]["DR"]["confusion"]["labels"])["macro_f1"]
    assert dr["intervals"]["macro_f1"] == pytest.approx(want.as_dict())
    assert dr["intervals"]["resamples"] == 1000 and dr["calibration"]["ece"] is not None
    assert stat.S_IMODE(stems[0].with_suffix(".html").stat().st_mode) == 0o600
    assert 'data-name="reliability diagram"' in stems[0].with_suffix(".html").read_text()
    result = run("compare", stems[0].with_suffix(".json"), stems[1].with_suffix(".json"))
    assert result.exit_code == 0, result.output
    assert re.search(r"DR .*[-+]\d\.\d{4} \[[-+]\d\.\d{4}, [-+]\d\.\d{4}\]", result.output), result.output
    same = run("compare", stems[0].with_suffix(".json"), stems[0].with_suffix(".json"))
    paired = same.output.split("Paired bootstrap intervals (1000 resamples of the shared rows, seed 0):")[1]
    for task in ("DR", "CAMS"):
        line = next(line for line in paired.splitlines() if line.startswith(task))
        assert line.split()[1:] == ["+0.0000", "[+0.0000,", "+0.0000]"] * 3 + [str(ROWS_PER_TASK)], line
    page = tmp_path / "from-eval.html"
    report(stems[0].with_suffix(".json"), stems[1].with_suffix(".json"), "-o", page)
    assert "DR" in page.read_text() and 'data-name="confusion matrix"' in page.read_text()


# -- in a browser -------------------------------------------------------------------------------------------


class Browser:
    """Headless Chromium driven over the DevTools protocol on 127.0.0.1 (websocket-client), fresh profile."""

    def __init__(self, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 90
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(url, suppress_origin=True, timeout=60)
        self.events, self._next = [], 0

    def call(self, method, **params):
        self._next += 1
        self.ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._next:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def open(self, page: Path):
        for domain in ("Runtime", "Page", "Log"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=page.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(json.loads(self.ws.recv()))

    def value(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def errors(self):
        return [e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]  # fmt: skip

    def screenshot(self, path: Path):
        height = self.value("document.documentElement.scrollHeight")
        self.call("Emulation.setDeviceMetricsOverride", width=1200, height=min(height, 16000), deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("headless Chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    opened = Browser(profile)
    yield opened
    opened.close()


FIGURE_SIZES = """JSON.stringify(Array.from(document.querySelectorAll('figure')).map(function (f) {
  var svg = f.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return [f.dataset.name, box.width, box.height];
}))"""


def test_the_page_renders_in_chromium_with_every_figure_drawn(fake_models, imhi_input, tmp_path, browser):
    before = analyze(fake_models, imhi_input, tmp_path / "before.jsonl")
    after = analyze(fake_models, imhi_input, tmp_path / "after.jsonl", salt="another model")
    page = tmp_path / "report.html"
    report(before, after, "-o", page, "--include-text", "--data", imhi_input)
    browser.open(page)
    sizes = json.loads(browser.value(FIGURE_SIZES))
    assert len(sizes) == page.read_text().count("<figure") == 1 + 2 * 2 * 4  # deltas; 2 runs x 2 tasks x 4
    assert all(width > 50 and height > 50 for _, width, height in sizes), sizes
    assert browser.value("document.querySelectorAll('svg text').length") > 100  # axis labels drawn as text
    browser.value("document.getElementById('expand').click()")
    assert browser.value("Array.prototype.every.call(document.querySelectorAll('details'), d => d.open)")
    assert browser.errors() == []
    browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 50_000 and SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_sees_a_script_error(tmp_path, browser):
    """The check above can fail: a page whose script throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><figure></figure><script>undefinedFunction()</script></body></html>")
    browser.open(page)
    assert browser.errors() and json.loads(browser.value(FIGURE_SIZES)) == [[None, 0, 0]]
