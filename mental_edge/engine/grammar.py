"""Output grammars (GBNF, llama.cpp's grammar format) for JSON output, built by llama-cpp-python's own JSON Schema
converter. `Sampling.grammar` carries the text; llama.cpp's grammar stage keeps every sampled token within it.

A schema comes from a client, so it is bounded before conversion: only local `$ref`s (`#/...`; the converter
would otherwise fetch a URL), no repetition counts past MAX_REPEAT (the converter writes `{n}` out as n copies),
no nesting past MAX_DEPTH, and the grammar at most MAX_GRAMMAR characters. Errors name the schema's field.
"""

from __future__ import annotations

import json
import re

from llama_cpp.llama_grammar import json_schema_to_gbnf

from mental_edge.errors import MentalEdgeError

MAX_REPEAT = 256  # minItems, maxItems, minLength, maxLength and {n,m} in patterns
MAX_DEPTH = 32
MAX_GRAMMAR = 100_000  # characters of GBNF
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_BRACES = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_EMPTY_RULE = re.compile(r"::=[ \t]*(?:\n|$)")


def json_grammar(schema: dict | None = None, where: str = "schema") -> str:
    """GBNF for a JSON value fitting `schema`; None: any JSON object (OpenAI's `json_object`)."""
    schema = {"type": "object"} if schema is None else schema
    _check(schema, where, 0)
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise MentalEdgeError(f"{where}: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - the converter raises bare Exception, AssertionError, KeyError...
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MentalEdgeError(f"{where}: cannot be turned into a grammar ({detail})") from None
    if _EMPTY_RULE.search(grammar):  # llama.cpp's parser refuses it, printing the grammar to stderr
        raise MentalEdgeError(f"{where}: allows no value at all (an empty enum or choice)")
    if len(grammar) > MAX_GRAMMAR:
        raise MentalEdgeError(f"{where}: its grammar has {len(grammar)} characters; at most {MAX_GRAMMAR}")
    return grammar


def _check(node, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MentalEdgeError(f"{where}: nested deeper than {MAX_DEPTH}")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        at = f"{where}.{key}"
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise MentalEdgeError(f"{at}: only references inside the schema (#/...) are followed")
        if key in _COUNTS and isinstance(value, int) and not isinstance(value, bool) and value > MAX_REPEAT:
            raise MentalEdgeError(f"{at}: {value}; at most {MAX_REPEAT}")
        if key == "pattern" and isinstance(value, str):
            counts = [int(n) for m in _BRACES.finditer(value) for n in m.groups() if n]
            if any(n > MAX_REPEAT for n in counts):
                raise MentalEdgeError(f"{at}: a repetition over {MAX_REPEAT}")
        _check(value, at, depth + 1)
