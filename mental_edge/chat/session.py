"""The terminal chat session: a conversation with a model, or posts analysed one by one (`/task`).

The conversation is re-rendered in the model's chat format at every turn and the engine reuses the cache of the
longest common prefix, so a turn reads only its new tokens. When the context fills, the oldest exchanges are
dropped (the system prompt kept). Ctrl-C while the model writes stops the answer; the part already written is kept
in the conversation. Nothing is written to disk except the input history (unless --no-history) and /save.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import click

from mental_edge.analysis import analyze_post
from mental_edge.chat import care
from mental_edge.chat.line_input import LineReader
from mental_edge.engine import Engine, Sampling
from mental_edge.errors import MentalEdgeError
from mental_edge.families import family_for
from mental_edge.io.files import atomic_write_text
from mental_edge.prompting import load_tasks
from mental_edge.prompting.chat_format import Message, chat_format_for
from mental_edge.store import store_home

TRANSCRIPT_FORMAT = "mental-edge-chat-transcript/1"


@dataclass
class Params:
    """Decoding settings changed with /params."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed)

    def set(self, name: str, value: str) -> None:
        kinds = {f.name: f.type for f in fields(self)}
        if name not in kinds:
            raise MentalEdgeError(f"unknown parameter {name!r}; parameters: {', '.join(kinds)}")
        try:
            parsed = int(value) if kinds[name] == "int" else float(value)
        except ValueError:
            raise MentalEdgeError(f"{name} takes a number, not {value!r}") from None
        checks = {"temperature": parsed >= 0, "top_p": 0 < parsed <= 1, "max_tokens": parsed >= 1, "seed": parsed >= 0}
        if not checks[name]:
            raise MentalEdgeError(
                f"{name} {value} is out of range (temperature >= 0, 0 < top_p <= 1, max_tokens >= 1, seed >= 0)"
            )
        setattr(self, name, parsed)

    def describe(self) -> str:
        return "  ".join(f"{k} {v}" for k, v in asdict(self).items())


HELP = """\
Type a message and press Enter. Paste multi-line text, or start a block with \"\"\" and end it with \"\"\".
Ctrl-C stops an answer (the part written is kept) or clears the line; Ctrl-D or /quit leaves.
  /help                 this text
  /task [TASK|all|off]  analysis mode: each message is a post, answered with labels, probabilities and an
                        explanation (no argument: the current mode and the tasks)
  /chat                 back to conversation
  /system [TEXT]        set (or show) the system prompt
  /reset                forget the conversation (the system prompt stays)
  /params [NAME VALUE]  show or set temperature, top_p, max_tokens, seed
  /model                what is loaded
  /save FILE            write the transcript as JSON (readable by you only)
  /load FILE            continue a saved transcript
  /quit                 leave
The input history (what you type, posts included) is kept in {history}."""


class Session:
    """One chat session over a loaded engine; `handle(text)` takes what the user typed."""

    def __init__(
        self,
        engine: Engine,
        *,
        system: str | None = None,
        task: str | None = None,
        country: str | None = None,
        history_file: Path | None = None,
        echo: Callable = click.echo,
    ):
        self.engine = engine
        self.format = chat_format_for(engine)
        self.system = system
        self.messages: list[Message] = []
        self.analyses: list[dict] = []
        self.params = Params()
        self.country = country
        self.history_file = history_file
        self.echo = echo
        self.task_set = load_tasks()
        self.tasks = self._pick_tasks(task) if task else None
        self.commands = {
            "help": self.cmd_help,
            "task": self.cmd_task,
            "chat": self.cmd_chat,
            "system": self.cmd_system,
            "reset": self.cmd_reset,
            "params": self.cmd_params,
            "model": self.cmd_model,
            "save": self.cmd_save,
            "load": self.cmd_load,
            "quit": self.cmd_quit,
            "exit": self.cmd_quit,
        }

    # -- dispatch -------------------------------------------------------------------------------

    def handle(self, text: str) -> bool:
        """Act on one input; False when the session should end."""
        if not text.strip():
            return True
        try:
            if text.startswith("/") and not text.startswith("//"):
                return self._command(text)
            text = text[1:] if text.startswith("//") else text  # `//x` sends a message starting with `/`
            if self.tasks:
                self.analyze(text)
            else:
                self.converse(text)
        except MentalEdgeError as exc:
            self.echo(f"Error: {exc}")
        return True

    def _command(self, text: str) -> bool:
        name, _, arg = text[1:].strip().partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            self.echo(f"Unknown command /{name}. Commands: {', '.join('/' + c for c in self.commands if c != 'exit')}")
            return True
        return command(arg.strip()) is not False

    def notice(self, text: str) -> None:
        self.echo(click.style(text, fg="yellow"))

    def warn_if_risk(self, text: str | None = None, results=None) -> None:
        if care.points_to_risk(text, results):
            self.notice(care.crisis_notice(self.country))

    # -- conversation ---------------------------------------------------------------------------

    def conversation(self) -> list[Message]:
        head = [Message("system", self.system)] if self.system else []
        return head + self.messages

    def converse(self, text: str) -> None:
        self.warn_if_risk(text)
        self.messages.append(Message("user", text))
        try:
            tokens = self._fit_prompt()
        except BaseException:  # too long, or Ctrl-C: the message is not part of the conversation
            self.messages.pop()
            raise
        generation = self.engine.generate(
            tokens, max_tokens=self.params.max_tokens, sampling=self.params.sampling(), stop=self.format.stop
        )
        answer = self._stream(generation)
        self.messages.append(Message("assistant", answer.strip()))
        if generation.finish_reason == "context":
            self.notice("[the context is full: the answer was cut; older turns will be dropped next]")

    def _stream(self, generation) -> str:
        """Print the answer as it comes; Ctrl-C stops it and keeps what was written."""
        pieces = []
        try:
            for piece in generation:
                pieces.append(piece)
                self.echo(piece, nl=False)
        except KeyboardInterrupt:
            generation.close()
            self.echo("")
            self.notice("[stopped]")
            return "".join(pieces)
        self.echo("")
        return "".join(pieces)

    def _fit_prompt(self) -> list[int]:
        """The prompt tokens, dropping the oldest exchanges while prompt and room for an answer overflow."""
        room = min(self.params.max_tokens, self.engine.n_ctx // 4)
        dropped = 0
        while True:
            tokens = self.format.tokens(self.engine, self.conversation())
            if len(tokens) + room <= self.engine.n_ctx:
                break
            if len(self.messages) < 3:  # only the new message is left
                raise MentalEdgeError(
                    f"the message needs {len(tokens)} tokens with the system prompt; "
                    f"the context holds {self.engine.n_ctx} (start with a larger --ctx)"
                )
            self._drop_oldest_exchange()
            dropped += 1
        if dropped:
            self.notice(f"[context full: dropped the {dropped} oldest exchange(s); the system prompt is kept]")
        return tokens

    def _drop_oldest_exchange(self) -> None:
        del self.messages[0]  # a user message
        if self.messages and self.messages[0].role == "assistant":
            del self.messages[0]

    # -- analysis -------------------------------------------------------------------------------

    def _pick_tasks(self, name: str):
        language = family_for(self.engine.info.architecture).language
        return self.task_set.get(name, language=language if name.strip().lower() == "all" else None)

    def analyze(self, post: str) -> None:
        """Each task's label and probabilities, then its explanation as it is written."""
        self.warn_if_risk(post)
        options = {"max_tokens": self.params.max_tokens, "sampling": self.params.sampling()}
        results = []
        try:
            for task in self.tasks:
                scored = analyze_post(self.engine, [task], post, explain=False, **options)[0]
                self._show_label(scored)
                if scored.label is None:
                    results.append(scored)
                    continue
                self.echo("  explanation: ", nl=False)
                explained = analyze_post(self.engine, [task], post, on_text=self._explanation_printer(), **options)[0]
                self.echo("")
                results.append(explained)
        except KeyboardInterrupt:
            self.echo("")
            self.notice("[analysis stopped]")
        self.analyses.append({"post": post, "results": [asdict(r) for r in results]})
        self.warn_if_risk(results=results)

    def _explanation_printer(self):
        started = False

        def on_text(task_name: str, piece: str) -> None:
            nonlocal started
            piece = piece if started else piece.lstrip()
            started = started or bool(piece)
            self.echo(piece, nl=False)

        return on_text

    def _show_label(self, result) -> None:
        if result.label is None:
            self.echo(f"{result.task}: no label ({'; '.join(result.flags)})")
            return
        probs = sorted(result.probabilities.items(), key=lambda kv: -kv[1])
        self.echo(f"{result.task}: {result.label}")
        self.echo("  probabilities: " + ", ".join(f"{label} {p:.1%}" for label, p in probs))

    # -- commands -------------------------------------------------------------------------------

    def storage_line(self) -> str:
        if self.history_file:
            return (
                f"/help lists the commands. What you type is kept in {self.history_file} for recall "
                "(--no-history to keep none); nothing else is written unless you /save."
            )
        return "/help lists the commands. Nothing is written to disk unless you /save."

    def cmd_help(self, arg: str) -> None:
        where = self.history_file if self.history_file else "memory only (--no-history): nothing is written"
        self.echo(HELP.format(history=where))

    def cmd_task(self, arg: str) -> None:
        if not arg:
            mode = ", ".join(t.name for t in self.tasks) if self.tasks else "off (conversation)"
            self.echo(f"analysis tasks: {mode}\nknown tasks: all, {', '.join(self.task_set.names())}")
        elif arg.lower() == "off":
            self.cmd_chat("")
        else:
            self.tasks = self._pick_tasks(arg)
            self.echo(f"analysis mode ({', '.join(t.name for t in self.tasks)}): each message is a post; /chat to talk")

    def cmd_chat(self, arg: str) -> None:
        self.tasks = None
        self.echo("conversation mode")

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.echo(f"system prompt: {self.system!r}" if self.system else "no system prompt (the template's default)")
            return
        self.system = arg
        self.echo("system prompt set")

    def cmd_reset(self, arg: str) -> None:
        self.messages.clear()
        self.echo("conversation cleared (the system prompt stays)")

    def cmd_params(self, arg: str) -> None:
        if arg:
            name, _, value = arg.partition(" ")
            if not value.strip():
                raise MentalEdgeError("usage: /params NAME VALUE")
            self.params.set(name.strip(), value.strip())
        self.echo(self.params.describe())

    def cmd_model(self, arg: str) -> None:
        info = self.engine.info
        self.echo(
            f"name: {info.name}\nfile: {info.path}\nsha256: {info.sha256}\n"
            f"architecture: {info.architecture}  quantization: {info.quantization}  "
            f"parameters: {info.n_params / 1e6:.1f}M\n"
            f"context: {self.engine.n_ctx} tokens (trained with {info.n_ctx_train})  "
            f"chat format: {self.format.name}\nengine: {info.engine}"
        )

    def cmd_save(self, arg: str) -> None:
        if not arg:
            raise MentalEdgeError("usage: /save FILE")
        path = Path(arg).expanduser()
        try:
            atomic_write_text(path, json.dumps(self.transcript(), ensure_ascii=False, indent=2) + "\n")
        except OSError as exc:
            raise MentalEdgeError(f"{path}: cannot write ({exc.strerror})") from None
        self.echo(f"saved to {path} (readable by you only)")

    def cmd_load(self, arg: str) -> None:
        if not arg:
            raise MentalEdgeError("usage: /load FILE")
        self.restore(Path(arg).expanduser())
        self.echo(f"loaded {len(self.messages)} messages from {arg}")

    def cmd_quit(self, arg: str) -> bool:
        return False

    # -- transcripts ----------------------------------------------------------------------------

    def transcript(self) -> dict:
        info = self.engine.info
        return {
            "format": TRANSCRIPT_FORMAT,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": info.name, "path": str(info.path), "quantization": info.quantization},
            "chat_format": self.format.name,
            "params": asdict(self.params),
            "system": self.system,
            "messages": [asdict(m) for m in self.messages],
            "analyses": self.analyses,
        }

    def restore(self, path: Path) -> None:
        data = read_transcript(path)
        self.system = data["system"]
        self.messages = [Message(m["role"], m["content"]) for m in data["messages"]]
        self.analyses = list(data.get("analyses") or [])
        for name, value in (data.get("params") or {}).items():
            self.params.set(name, str(value))


def read_transcript(path: Path) -> dict:
    """A saved transcript, checked field by field (one line naming what is wrong)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MentalEdgeError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MentalEdgeError(f"{path}: not a JSON transcript ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
        raise MentalEdgeError(f"{path}: not a mental-edge chat transcript (field 'format')")
    if data.get("system") is not None and not isinstance(data["system"], str):
        raise MentalEdgeError(f"{path}: field 'system' must be text or null")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise MentalEdgeError(f"{path}: field 'messages' must be a list")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)):
            raise MentalEdgeError(f"{path}: messages[{i}] needs a role (user or assistant) and a text content")
    return data


def run_session(session: Session, reader: LineReader) -> None:
    """The read-answer loop, until Ctrl-D or /quit."""
    session.notice(care.OPENING)
    session.echo(session.storage_line())
    while True:
        try:
            text = reader.read()
        except EOFError:
            session.echo("")
            return
        try:
            if not session.handle(text):
                return
        except KeyboardInterrupt:  # between the answer's pieces it is caught nearer; anywhere else, here
            session.echo("")
            session.notice("[interrupted]")


def chat(
    open_engine: Callable[[], Engine],
    *,
    task: str | None = None,
    system: str | None = None,
    country: str | None = None,
    history: bool = True,
) -> None:
    """Open the model (`open_engine()`: the CLI's, with its model options) and run a terminal session on it."""
    engine = open_engine()
    try:
        history_file = store_home() / "chat_history" if history else None
        session = Session(engine, system=system, task=task, country=country, history_file=history_file)
        run_session(session, LineReader(history_file))
    finally:
        engine.close()
