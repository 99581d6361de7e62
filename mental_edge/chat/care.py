"""What the session tells a person about its limits and about help, and when.

The crisis-help text depends on where the user is: `--country CC` or $MENTAL_EDGE_COUNTRY picks a line from
the table below (international fallback otherwise), and a text file replaces it altogether:
$MENTAL_EDGE_CRISIS_FILE, else `$MENTAL_EDGE_HOME/crisis-help.txt` when it exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from mental_edge.errors import MentalEdgeError

OPENING = (
    "mental-edge chat is a research tool. What the model says is not a diagnosis and not advice, and it can be wrong.\n"
    "If you are struggling, talk to someone you trust or a professional; if you are in danger now, call your local\n"
    "emergency number."
)

INTERNATIONAL = (
    "If you are in immediate danger, call your local emergency number. "
    "Find a free, confidential helpline in your country at https://findahelpline.com"
)

CRISIS_LINES = {
    "US": "United States: call or text 988 (988 Suicide & Crisis Lifeline), or chat at https://988lifeline.org",
    "CA": "Canada: call or text 988 (9-8-8 Suicide Crisis Helpline)",
    "GB": "United Kingdom: call Samaritans on 116 123 (free, any time), or text SHOUT to 85258",
    "IE": "Ireland: call Samaritans on 116 123 (free, any time), or text HELLO to 50808",
    "AU": "Australia: call Lifeline on 13 11 14, or text 0477 13 11 14",
    "NZ": "New Zealand: call or text 1737 (free, any time), or Lifeline on 0800 543 354",
    "DE": "Deutschland: TelefonSeelsorge 0800 111 0 111 oder 0800 111 0 222 (kostenlos, rund um die Uhr)",
    "FR": "France : appelez le 3114 (numéro national de prévention du suicide, 24h/24)",
    "IN": "India: call Tele-MANAS on 14416 or 1-800-891-4416 (free, any time)",
    "CN": "中国：北京心理危机研究与干预中心 010-82951332（24小时），或拨打 12356 心理援助热线",
}
ALIASES = {"UK": "GB"}

_CUES = re.compile(
    r"suicid|kill(?:ing)? myself|end(?:ing)? (?:my life|it all)|take my (?:own )?life|want(?:ed)? to die|"
    r"better off dead|no reason to live|self[- ]?harm|hurt(?:ing)? myself|cut(?:ting)? myself|overdos|"
    r"自杀|轻生|不想活|想死|自残|割腕",
    re.IGNORECASE,
)
_RISK_LABELS = ("suicide", "self-harm", "高自杀风险")
_RISK_TASK_FAMILIES = ("Irf",)  # interpersonal risk factors of suicide: a "yes" is a risk


def country_code(country: str | None = None) -> str | None:
    code = (country or os.environ.get("MENTAL_EDGE_COUNTRY") or "").strip().upper()
    return ALIASES.get(code, code) or None


def _override_file() -> Path | None:
    named = os.environ.get("MENTAL_EDGE_CRISIS_FILE")
    if named:
        return Path(named).expanduser()
    home = os.environ.get("MENTAL_EDGE_HOME")
    default = Path(home or Path.home() / ".cache" / "mental-edge").expanduser() / "crisis-help.txt"
    return default if default.is_file() else None


def crisis_notice(country: str | None = None) -> str:
    """The crisis-help text for the user's country (a user file replaces it)."""
    path = _override_file()
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise MentalEdgeError(f"{path}: cannot read the crisis-help text ({exc})") from None
    line = CRISIS_LINES.get(country_code(country) or "")
    body = f"{line}\n{INTERNATIONAL}" if line else INTERNATIONAL
    return f"If you or someone you know may be thinking about suicide or self-harm, please reach out now.\n{body}"


def points_to_risk(text: str | None = None, results: Iterable | None = None) -> bool:
    """True when the text has suicide or self-harm cues, or an analysis result (objects with `task` and `label`)
    names such a risk: t-sid's suicide or self-harm tendency, SWMH's suicide, an Irf risk, high suicide risk."""
    if text and _CUES.search(text):
        return True
    for result in results or ():
        label = (result.label or "").lower()
        if any(cue in label for cue in _RISK_LABELS):
            return True
        if label == "yes" and result.task.split("-")[0] in _RISK_TASK_FAMILIES:
            return True
    return False
