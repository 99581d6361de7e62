"""`mental-edge doctor`: what this installation can do, in one screen.

llama.cpp's own build report (backends compiled in, SIMD features), whether layers can go to a GPU and the
`--gpu-layers` default that follows, threads, the model store, and which optional engines are installed.
Nothing here loads a model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re

from mental_edge import store
from mental_edge.engine import threads as cpu
from mental_edge.version import __version__

# optional packages and what each one enables
OPTIONAL = {
    "ctranslate2": "MentalBART (CTranslate2 engine)",
    "ray": "distributed analysis runs",
    "fastapi": "mental-edge serve",
    "uvicorn": "mental-edge serve",
}


def installed_version(package: str) -> str | None:
    """The installed version of a package, or None when it cannot be imported."""
    if importlib.util.find_spec(package) is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def store_summary() -> dict:
    home = store.store_home()
    models = store.list_models()
    size = sum(p.stat().st_size for p in store.models_dir().rglob("*") if p.is_file())
    return {"location": str(home), "models": len(models), "size_bytes": size}


def llama_summary() -> dict:
    try:
        from mental_edge.engine.llamacpp.decoder import system_info
    except ImportError as exc:  # llama-cpp-python missing or its library failed to load
        return {"error": f"llama-cpp-python cannot be loaded ({exc})"}
    info = system_info()
    info["backends"] = backends(info["system_info"])
    return info


def cpu_summary() -> dict:
    """The cores, how busy other work keeps them now, and the --threads default that follows (see engine/threads.py)."""
    choice = cpu.choose_threads(None)
    return {
        "cores": choice.cores,
        "busy": round(choice.busy, 1),
        "default_threads": choice.threads,
        "note": choice.note,
    }


def diagnose() -> dict:
    return {
        "mental_edge": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama_cpp": llama_summary(),
        "cpu": cpu_summary(),
        "store": store_summary(),
        "optional": {name: installed_version(name) for name in OPTIONAL},
    }


def render(report: dict) -> str:
    """The report as aligned lines for a terminal."""
    llama = report["llama_cpp"]
    lines = [f"mental-edge {report['mental_edge']} (Python {report['python']}, {report['platform']})", ""]
    if "error" in llama:
        lines.append(f"llama.cpp:            {llama['error']}")
    else:
        gpu = "yes" if llama["gpu_offload"] else "no (CPU-only build)"
        layers = "all (-1)" if llama["default_gpu_layers"] < 0 else str(llama["default_gpu_layers"])
        lines += [
            f"llama.cpp:            llama-cpp-python {llama['version']}",
            f"backends:             {', '.join(llama['backends']) or 'none reported'}",
            f"system info:          {llama['system_info']}",
            f"GPU offload:          {gpu}",
            f"default --gpu-layers: {layers}",
        ]
    load = report["cpu"]
    lines.append(
        f"default --threads:    {load['default_threads']} ({load['cores']} cores, "
        f"{load['busy']} busy with other work now)"
    )
    if load["note"]:
        lines.append(f"                      {load['note']}")
    st = report["store"]
    lines += [
        "",
        f"model store:          {st['location']}",
        f"                      {st['models']} model(s), {store.size_text(st['size_bytes'])}",
        "",
        "optional engines:",
    ]
    for name, purpose in OPTIONAL.items():
        version = report["optional"][name]
        lines.append(f"  {name:<12} {version or 'not installed':<16} {purpose}")
    return "\n".join(lines)


def backends(system_info: str) -> list[str]:
    """Backend names in llama.cpp's system info ("CUDA : ARCHS = 890 | ... | CPU : SSE3 = 1 | ..."): each
    backend's features follow its name and a colon."""
    return re.findall(r"(?:^|\|)\s*([A-Za-z][\w-]*) : ", system_info)
