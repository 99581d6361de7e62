"""Quantize a GGUF file through llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`).

Every file type llama.cpp knows is accepted by name (Q4_K_M, Q8_0, IQ4_XS, ...): the names are read from
llama_cpp's LLAMA_FTYPE_* constants, so a newer llama.cpp brings its new types along. llama.cpp reports
progress and the tensors whose shape forced another type ("falling back") only in its log, so the log is
captured for the duration of the call and parsed; it is not printed.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError
from .gguf_out import Progress, publish, temp_path

_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_FALLBACK = re.compile(r"warning: (\S+)\s+- ncols .*?\(required for type\s+(\S+)\).*?-> falling back to\s+(\S+)")
_FAILED = re.compile(r"failed to quantize: (.*)")
_LAYER = re.compile(r"^blk\.\d+\.")


def file_types() -> dict[str, int]:
    """llama.cpp's file types by name: "Q4_K_M" -> 15, ..., "F16", "BF16", "F32"."""
    import llama_cpp

    types = {}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            types[attr.removeprefix("LLAMA_FTYPE_MOSTLY_")] = int(getattr(llama_cpp, attr))
    types["F32"] = int(llama_cpp.LLAMA_FTYPE_ALL_F32)
    return types


def file_type_for(type_name: str) -> int:
    types = file_types()
    key = type_name.upper()
    if key not in types:
        raise ConversionError(f"unknown quantization type {type_name!r}; llama.cpp knows: {', '.join(types)}")
    return types[key]


@dataclass
class QuantizeResult:
    path: Path
    type_name: str
    fallbacks: dict[str, tuple[str, str]] = field(default_factory=dict)  # tensor -> (wanted type, used type)

    def fallback_report(self) -> str | None:
        """One line naming the tensors that got another type because their rows are not whole blocks of the
        wanted one, layers folded together: "blk.*.ffn_down.weight (40 tensors: q4_K->q5_0 x20, q6_K->q8_0 x20)"
        (GLM-4's feed-forward width 13696 is not a multiple of the K-quants' 256)."""
        if not self.fallbacks:
            return None
        groups: dict[str, dict[str, str]] = {}
        for tensor, (wanted, used) in self.fallbacks.items():
            groups.setdefault(_LAYER.sub("blk.*.", tensor), {})[tensor] = f"{wanted}->{used}"
        parts = []
        for name, members in sorted(groups.items()):
            if len(members) == 1:
                ((tensor, kind),) = members.items()
                parts.append(f"{tensor} ({kind})")
                continue
            kinds = Counter(members.values())
            parts.append(
                f"{name} ({len(members)} tensors: "
                f"{', '.join(f'{kind} x{count}' for kind, count in sorted(kinds.items()))})"
            )
        return (
            f"{len(self.fallbacks)} tensor(s) have rows that do not fit {self.type_name} blocks and use "
            f"another type: {'; '.join(parts)}"
        )


class _LogCapture:
    """Receives llama.cpp's log while installed; turns complete lines into progress and fallback records."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.pending = ""
        self.fallbacks: dict[str, tuple[str, str]] = {}
        self.error: str | None = None

    def feed(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        if m := _FALLBACK.search(line):
            self.fallbacks[m.group(1)] = (m.group(2), m.group(3))
        if (m := _PROGRESS.search(line)) and "size =" in line and self.progress is not None:
            try:
                self.progress(int(m.group(1)), int(m.group(2)), m.group(3))
            except Exception:  # an exception cannot cross the C callback; progress is best effort here
                self.progress = None
        if m := _FAILED.search(line):
            self.error = m.group(1).strip()


def _run_with_log(capture: _LogCapture, call):
    import llama_cpp
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        capture.feed(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    try:
        return call()
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        capture.feed("\n")


def quantize(
    src: str | os.PathLike, dst: str | os.PathLike, type_name: str, progress: Progress | None = None, threads: int = 0
) -> QuantizeResult:
    """Write `src` (an f32/f16/bf16 GGUF) quantized as `type_name` to `dst` (temporary name, then renamed).

    llama.cpp runs the whole quantization in one C call: Ctrl-C takes effect when it returns, and the
    temporary file is then removed.
    """
    import llama_cpp

    src, dst = Path(src), Path(dst)
    ftype = file_type_for(type_name)
    if not src.is_file():
        raise ConversionError(f"{src}: no such GGUF file")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    capture = _LogCapture(progress)
    tmp = temp_path(dst)
    try:
        status = _run_with_log(
            capture, lambda: llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), ctypes.byref(params))
        )
        if status != 0:
            raise ConversionError(
                f"{src.name}: llama.cpp could not quantize it to {type_name.upper()}: "
                f"{capture.error or 'see llama.cpp log'}"
            )
        publish(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return QuantizeResult(dst, type_name.upper(), capture.fallbacks)
