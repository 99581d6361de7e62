"""The local model store: model files plus a small JSON registry, and name resolution.

Layout of `$MENTAL_EDGE_HOME` (default ~/.cache/mental-edge, mode 0700):
    models/<name>.gguf (or models/<name>/ for a CTranslate2 folder)
    models.json        the registry, rewritten atomically (temp file + rename) under a lock
    downloads/         checkpoints fetched from the hub, removed after a successful pull

Every command that takes `--model` goes through `resolve_model`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from mental_edge.errors import MentalEdgeError

HOW_TO_GET = "get one with 'mental-edge pull mentallama-7b' or 'mental-edge import FILE.gguf'"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_OPTIONAL = ("verification", "mtime")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str  # relative to models/
    architecture: str  # general.architecture of the GGUF, or "ctranslate2"
    quant: str  # Q4_K_M, F16, ... (the file type)
    size: int  # bytes
    sha256: str
    source: str  # hub repo id, or the path it was imported from
    revision: str  # resolved commit sha, "" when unknown
    date: str  # when it entered the store, UTC ISO-8601
    verification: dict | None = None  # `pull --verify`'s result (verification.pull_check), None: not checked
    mtime: float | None = None  # the hashed file's mtime when last hashed (None: an entry from before it was kept)

    @classmethod
    def from_dict(cls, data: dict) -> ModelEntry:
        return cls(**{f.name: data.get(f.name, None if f.name in _OPTIONAL else "") for f in fields(cls)})

    def verified_text(self) -> str:
        """For `models`: "yes 18/18" (label agreement), "NO 12/18", or "-" when never checked."""
        if not self.verification:
            return "-"
        mark = "yes" if self.verification.get("verified") else "NO"
        return f"{mark} {self.verification.get('label_agreement', '')}".strip()


# ---------------------------------------------------------------- places


def size_text(n: int) -> str:
    """A file size for people, in binary units (as the memory figures in docs/performance.md)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def store_home() -> Path:
    """The store folder, created owner-only on first use."""
    home = Path(os.environ.get("MENTAL_EDGE_HOME") or Path.home() / ".cache" / "mental-edge").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def models_dir() -> Path:
    path = store_home() / "models"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def downloads_dir() -> Path:
    path = store_home() / "downloads"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def model_path(entry: ModelEntry) -> Path:
    return models_dir() / entry.file


# ---------------------------------------------------------------- registry


def _registry_file() -> Path:
    return store_home() / "models.json"


def _read_registry() -> dict[str, ModelEntry]:
    path = _registry_file()
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["models"]
        return {row["name"]: ModelEntry.from_dict(row) for row in rows}
    except (ValueError, KeyError, TypeError) as exc:
        raise MentalEdgeError(f"the store registry {path} is damaged ({exc}); move it away to start afresh") from None


def _write_registry(entries: dict[str, ModelEntry]) -> None:
    """Temp file + rename: a reader sees the old registry or the new one, never half of one."""
    path = _registry_file()
    rows = [asdict(entries[name]) for name in sorted(entries)]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".models.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": 1, "models": rows}, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked():
    """One writer at a time (two pulls finishing together must not lose an entry)."""
    lock_path = store_home() / ".lock"
    with open(lock_path, "a") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, the rename still keeps the file whole
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------- file facts


def sha256_of(path: Path) -> str:
    """Streamed: a 13B model never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_facts(path: Path) -> tuple[str, str]:
    """(architecture, file type) of a GGUF file; a file that is not a whole GGUF gives one line naming it. The
    header is read with bounded reads (engine/gguf_header.py), so a hostile file is refused before it is copied."""
    from gguf import LlamaFileType

    from mental_edge.engine.gguf_header import FileProblem, read_header

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise MentalEdgeError(f"{path} is not a GGUF file (bad magic)")
    try:
        header = read_header(path)
    except FileProblem as exc:
        raise MentalEdgeError(f"{path} is not a readable GGUF file ({exc})") from None
    architecture = header.values.get("general.architecture")
    if not architecture or not isinstance(architecture, str):
        raise MentalEdgeError(f"{path} has no general.architecture: not a model GGUF")
    file_type = header.values.get("general.file_type")
    try:
        quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        quant = "unknown" if file_type is None else f"type {file_type}"
    return architecture, quant


def _folder_facts(path: Path) -> tuple[str, int, str]:
    """(architecture, size, sha256) of a CTranslate2 model folder: the hash is that of its model.bin."""
    weights = path / "model.bin"
    if not weights.is_file():
        raise MentalEdgeError(f"{path} is a folder without model.bin: not a CTranslate2 model")
    return "ctranslate2", _folder_facts_size(path), sha256_of(weights)


def describe(path: Path, name: str, source: str, revision: str = "", quant: str = "") -> ModelEntry:
    """The registry entry of a model already placed at models/<file>."""
    if path.is_dir():
        architecture, size, digest = _folder_facts(path)
    else:
        architecture, quant = gguf_facts(path)
        size, digest = path.stat().st_size, sha256_of(path)
    return ModelEntry(
        mtime=_hashed_file(path).stat().st_mtime,
        name=name,
        file=path.name,
        architecture=architecture,
        quant=quant or "unknown",
        size=size,
        sha256=digest,
        source=source,
        revision=revision,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _hashed_file(path: Path) -> Path:
    """The file whose sha256 an entry keeps: the GGUF file, or a CTranslate2 folder's model.bin."""
    return path / "model.bin" if path.is_dir() else path


def check_unchanged(entry: ModelEntry) -> ModelEntry:
    """The entry, once its file is known to be the one that entered the store: when size or mtime differ from
    the entry's (or no mtime was kept), the file is hashed again; the same hash keeps the entry (its mtime
    brought up to date), another is one line saying what changed and how to re-import."""
    path = model_path(entry)
    hashed = _hashed_file(path)
    if not hashed.is_file():
        raise MentalEdgeError(
            f"store model '{entry.name}' lost its file {hashed}: 'mental-edge models rm {entry.name}' and pull it again"
        )
    stat = hashed.stat()
    size = _folder_facts_size(path) if path.is_dir() else stat.st_size
    if size == entry.size and entry.mtime == stat.st_mtime:
        return entry
    digest = sha256_of(hashed)
    if digest != entry.sha256:
        what = f"size {entry.size} -> {size} bytes, " if size != entry.size else ""
        raise MentalEdgeError(
            f"store model '{entry.name}': {hashed} changed since it entered the store ({what}sha256 "
            f"{entry.sha256[:12]} -> {digest[:12]}); re-import the original with 'mental-edge models rm {entry.name}' "
            f"and 'mental-edge import FILE --name {entry.name}' (or pull it again)"
        )
    with _locked():
        entries = _read_registry()
        if entry.name in entries:
            entries[entry.name] = replace(entries[entry.name], size=size, mtime=stat.st_mtime)
            _write_registry(entries)
    return replace(entry, size=size, mtime=stat.st_mtime)


def _folder_facts_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def register(entry: ModelEntry) -> ModelEntry:
    with _locked():
        entries = _read_registry()
        entries[entry.name] = entry
        _write_registry(entries)
    return entry


# ---------------------------------------------------------------- public API


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise MentalEdgeError(f"model name '{name}' is not allowed: use lower-case letters, digits, '.', '_' and '-'")
    return name


def default_name(file_name: str) -> str:
    stem = Path(file_name).name.removesuffix(".gguf").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._") or "model"


def list_models() -> list[ModelEntry]:
    entries = _read_registry()
    return [entries[name] for name in sorted(entries)]


def get_model(name: str) -> ModelEntry | None:
    """A store entry by its exact name."""
    return _read_registry().get(name)


def find_model(name: str) -> ModelEntry | None:
    """A store entry by exact name, else by the one entry named `<name>-<quant>`."""
    entries = _read_registry()
    if name in entries:
        return entries[name]
    stem = [e for n, e in entries.items() if n.startswith(f"{name.lower()}-")]
    if len(stem) > 1:
        names = ", ".join(sorted(e.name for e in stem))
        raise MentalEdgeError(f"'{name}' matches several models in the store ({names}): give the full name")
    return stem[0] if stem else None


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """An existing path wins; else a store name; else one line saying what the store holds."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entry = find_model(str(name_or_path))
    if entry is not None:
        found = model_path(entry)
        if not found.exists():
            raise MentalEdgeError(
                f"store model '{entry.name}' lost its file {found}: "
                f"'mental-edge models rm {entry.name}' and pull it again"
            )
        return found
    held = ", ".join(e.name for e in list_models()) or "nothing"
    raise MentalEdgeError(
        f"model '{name_or_path}' is neither a file nor a store name "
        f"(the store at {store_home()} holds: {held}); {HOW_TO_GET}"
    )


def default_model() -> ModelEntry:
    """The store's model when it holds exactly one (commands then need no --model)."""
    held = list_models()
    if len(held) == 1:
        return held[0]
    if not held:
        raise MentalEdgeError(f"the model store at {store_home()} holds no model: {HOW_TO_GET}, or give --model FILE")
    names = ", ".join(e.name for e in held)
    raise MentalEdgeError(f"the store holds several models ({names}): say which with --model NAME")


def import_model(file: str | os.PathLike, name: str | None = None) -> ModelEntry:
    """Bring a GGUF file (or a CTranslate2 folder) into the store: hard-linked where possible, else copied."""
    src = Path(file).expanduser()
    if not src.exists():
        raise MentalEdgeError(f"{src}: no such file")
    if src.is_file():
        gguf_facts(src)  # refuse a damaged file before copying gigabytes
    name = check_name(name or default_name(src.name))
    if name in _read_registry():
        raise MentalEdgeError(
            f"the store already holds '{name}': pick another with --name or 'mental-edge models rm {name}'"
        )
    dest = models_dir() / (name if src.is_dir() else f"{name}.gguf")
    _place(src, dest)
    try:
        return register(describe(dest, name, source=str(src.resolve())))
    except BaseException:
        _remove_path(dest)
        raise


def remove_model(name: str) -> ModelEntry:
    with _locked():
        entries = _read_registry()
        entry = entries.pop(name, None)
        if entry is None:
            held = ", ".join(sorted(entries)) or "nothing"
            raise MentalEdgeError(f"no model named '{name}' in the store (it holds: {held})")
        _remove_path(model_path(entry))
        _write_registry(entries)
    return entry


def _place(src: Path, dest: Path) -> None:
    """Hard link (instant, no extra space) or copy through a temporary name, so `dest` appears whole."""
    if dest.exists():
        raise MentalEdgeError(f"{dest} already exists in the store folder but is not registered: remove it first")
    if src.is_file():
        with contextlib.suppress(OSError):
            os.link(src, dest)
            return
    tmp = dest.with_name(f".{dest.name}.part")
    _remove_path(tmp)
    try:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        _remove_path(tmp)
        raise MentalEdgeError(f"cannot copy {src} into the store: {exc.strerror or exc}") from None


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
