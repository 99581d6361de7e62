"""Hugging Face hub access for the store: list a repo, pick the files conversion needs, download them.

Only this module talks to the hub (through huggingface-hub). Every failure a user can meet (offline,
unreachable, unknown repo or revision, gated repo) becomes a one-line MentalEdgeError.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mental_edge.errors import MentalEdgeError

OFFLINE_ADVICE = (
    "convert a local copy with 'mental-edge convert /local/copy -o x.gguf' and add it with "
    "'mental-edge import x.gguf' (a .gguf file fetched elsewhere can be imported as it is)"
)

# Files a checkpoint's conversion reads, beside the weights. Data only: no *.py is ever fetched.
CHECKPOINT_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.model",  # SentencePiece (LLaMA) or tiktoken ranks (GLM-4)
    "spiece.model",  # T5's SentencePiece
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",  # byte-level BPE shipped as two files (BART)
    "merges.txt",
)
# A tokenizer is one of these files (or the vocab.json + merges.txt pair); TOKENIZER_SIDE_FILES are what a
# tokenizer taken from another repo (`--tokenizer-from`) brings along.
TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "tokenizer.json")
TOKENIZER_SIDE_FILES = tuple(f for f in CHECKPOINT_SIDE_FILES if f not in ("config.json", "generation_config.json"))

SOURCE_FILE = "mental-edge-source.json"  # repo and commit of a downloaded checkpoint

_SHARD = r"-\d{5}-of-\d{5}"
_SAFETENSORS = re.compile(rf"model(?:{_SHARD})?\.safetensors")
_TORCH_BIN = re.compile(rf"pytorch_model(?:{_SHARD})?\.bin")
_GGUF_SPLIT = re.compile(rf"{_SHARD}\.gguf$")

# Without --quant, the first of these a GGUF repo holds is taken.
GGUF_PREFERENCE = ("Q4_K_M", "Q5_K_M", "Q4_K_S", "Q6_K", "Q8_0", "Q4_0", "F16", "BF16", "F32")


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    sha: str  # the resolved commit
    files: tuple[str, ...]

    def gguf_files(self) -> list[str]:
        return sorted(f for f in self.files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as it is now (huggingface-hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str | None:
    """HF_ENDPOINT as it is now, for the same reason."""
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


@contextmanager
def hub_errors(repo_id: str, revision: str | None):
    """Turn the hub's connection and lookup errors into one line each."""
    import httpx2
    from huggingface_hub import errors as hf

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError, httpx2.TransportError) as exc:
        why = "offline mode is on" if isinstance(exc, hf.OfflineModeIsEnabled) else "no connection"
        raise MentalEdgeError(f"cannot reach the Hugging Face hub for {where} ({why}): {OFFLINE_ADVICE}") from None
    except hf.RevisionNotFoundError:
        raise MentalEdgeError(f"revision '{revision}' not found in {repo_id} on the hub") from None
    except hf.GatedRepoError:
        raise MentalEdgeError(
            f"{repo_id} is gated: accept its terms on huggingface.co and log in with 'hf auth login'"
        ) from None
    except hf.RepositoryNotFoundError:
        raise MentalEdgeError(f"repository {repo_id} not found on the hub (or it is private)") from None
    except hf.EntryNotFoundError as exc:
        raise MentalEdgeError(f"a file of {where} is missing on the hub: {_first_line(exc)}") from None
    except hf.HfHubHTTPError as exc:
        raise MentalEdgeError(f"the hub refused {where}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_online(repo_id: str) -> None:
    if hub_offline():
        raise MentalEdgeError(
            f"cannot reach the Hugging Face hub for {repo_id} (HF_HUB_OFFLINE is set): {OFFLINE_ADVICE}"
        )


def list_repo(repo_id: str, revision: str | None = None) -> RepoListing:
    """The repo's files at `revision` and the commit it resolves to (one API call)."""
    from huggingface_hub import HfApi

    _require_online(repo_id)
    with hub_errors(repo_id, revision):
        info = HfApi(endpoint=_endpoint()).model_info(repo_id, revision=revision)
    files = tuple(s.rfilename for s in (info.siblings or ()))
    return RepoListing(repo_id=repo_id, sha=info.sha, files=files)


def checkpoint_files(listing: RepoListing) -> list[str]:
    """What conversion needs from a checkpoint repo: the side files and ONE weight format.

    safetensors win over pytorch_model*.bin; only top-level files (no onnx/ or original/ copies), no
    code, no optimizer states, no adapters.
    """
    top = [f for f in listing.files if "/" not in f]
    weights = [f for f in top if _SAFETENSORS.fullmatch(f)]
    index = "model.safetensors.index.json"
    if not weights:
        weights = [f for f in top if _TORCH_BIN.fullmatch(f)]
        index = "pytorch_model.bin.index.json"
    if not weights:
        raise MentalEdgeError(
            f"{listing.repo_id} holds no model*.safetensors, pytorch_model*.bin or .gguf weights "
            f"(files: {', '.join(sorted(top)) or 'none'})"
        )
    side = [f for f in CHECKPOINT_SIDE_FILES if f in top]
    if "config.json" not in side:
        raise MentalEdgeError(f"{listing.repo_id} has no config.json: not a Hugging Face checkpoint")
    return side + ([index] if index in top else []) + sorted(weights)


def download(listing: RepoListing, files: list[str], dest: Path) -> Path:
    """Fetch exactly `files` of the listed commit into `dest` (resumes a partial download)."""
    from huggingface_hub import snapshot_download

    _require_online(listing.repo_id)
    dest.mkdir(parents=True, exist_ok=True)
    with hub_errors(listing.repo_id, listing.sha):
        snapshot_download(
            listing.repo_id,
            revision=listing.sha,
            local_dir=dest,
            allow_patterns=[_escape_glob(f) for f in files],
            endpoint=_endpoint(),
        )
    missing = [f for f in files if not (dest / f).is_file()]
    if missing:
        raise MentalEdgeError(f"download of {listing.repo_id} is incomplete: {', '.join(missing)} missing")
    return dest


def _escape_glob(name: str) -> str:
    """allow_patterns are fnmatch patterns; a file name must match only itself."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def quant_of_name(file_name: str) -> str | None:
    """The llama.cpp type a GGUF file name announces (Q4_K_M, IQ4_XS, F16, ...), if any."""
    stem = _GGUF_SPLIT.sub(".gguf", Path(file_name).name)
    found = re.findall(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|[BF]F?16|F32)(?=[.\-]|$)", stem[:-5], re.I)
    return found[-1].upper() if found else None


def choose_gguf(listing: RepoListing, quant: str | None) -> tuple[list[str], str]:
    """The file(s) of one GGUF model in the repo and the reason it was chosen.

    A split model (name-00001-of-00003.gguf) comes back as all its parts, first part first.
    """
    models: dict[str, list[str]] = {}
    for f in listing.gguf_files():
        models.setdefault(_GGUF_SPLIT.sub(".gguf", f), []).append(f)
    by_quant: dict[str, str] = {}
    for key in sorted(models):
        by_quant.setdefault(quant_of_name(key) or key, key)
    offered = ", ".join(sorted(by_quant))
    if quant:
        key = by_quant.get(quant.upper())
        if key is None:
            raise MentalEdgeError(f"{listing.repo_id} has no {quant.upper()} GGUF file (it offers: {offered})")
        reason = f"the {quant.upper()} file"
    else:
        key = next((by_quant[q] for q in GGUF_PREFERENCE if q in by_quant), None) or by_quant[min(by_quant)]
        reason = f"the default pick; --quant chooses among {offered}"
    return sorted(models[key]), reason


def has_tokenizer(files) -> bool:
    """Whether these file names (a listing's, a folder's) hold a tokenizer conversion can read."""
    names = set(files)
    return bool(names & set(TOKENIZER_FILES)) or {"vocab.json", "merges.txt"} <= names


def no_tokenizer_error(where: str) -> MentalEdgeError:
    looked = ", ".join(TOKENIZER_FILES) + ", vocab.json + merges.txt"
    return MentalEdgeError(
        f"{where} has no tokenizer files (looked for {looked}): "
        "give its base model's tokenizer with --tokenizer-from FOLDER|REPO"
    )


def tokenizer_files(listing: RepoListing) -> list[str]:
    """The tokenizer files of a repo (for --tokenizer-from REPO): data only, no weights, no code."""
    top = [f for f in listing.files if "/" not in f]
    if not has_tokenizer(top):
        raise no_tokenizer_error(listing.repo_id)
    return [f for f in TOKENIZER_SIDE_FILES if f in top]


def download_folder(listing: RepoListing, root: Path) -> Path:
    """Where files of one commit are downloaded under `root`: same commit, same folder, so a rerun resumes."""
    return root / f"{listing.repo_id.replace('/', '--')}--{listing.sha[:12]}"


def holds_only_gguf(listing: RepoListing) -> bool:
    """A GGUF repo: .gguf files and no checkpoint weights."""
    weights = any(_SAFETENSORS.fullmatch(f) or _TORCH_BIN.fullmatch(f) for f in listing.files)
    return bool(listing.gguf_files()) and not weights


def write_checkpoint_source(folder: Path, listing: RepoListing) -> None:
    """Record beside a downloaded checkpoint which repo and commit it is (read by checkpoint_source)."""
    (folder / SOURCE_FILE).write_text(json.dumps({"repo": listing.repo_id, "revision": listing.sha}), encoding="utf-8")


def checkpoint_source(folder: Path) -> tuple[str, str] | None:
    """(repo id, commit sha) of a folder written by write_checkpoint_source, None for any other folder."""
    try:
        data = json.loads((Path(folder) / SOURCE_FILE).read_text(encoding="utf-8"))
        return str(data["repo"]), str(data["revision"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
