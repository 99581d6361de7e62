"""The fuzz harness's worker (gguf_fuzz.py): reads model paths on stdin, one per line, and for each opens the model
as the CLI does (`open_engine`), tokenizes a post, scores two answers and generates a few tokens, then answers one
JSON line: {"status": "ran" | "refused" | "traceback", "message": ...}. A crash ends the process (the harness
names the file and starts another worker); stderr goes nowhere so that only these lines come back."""

import json
import os
import sys
import traceback

from mental_edge.api.loading import open_engine
from mental_edge.engine import PromptText, Sampling, Segment
from mental_edge.errors import MentalEdgeError

POST = "I can't sleep, work is crushing me and I feel worthless. 我最近总是失眠。 ✓ \x04"


def exercise(path: str) -> None:
    engine = open_engine(path, n_ctx=128, threads=1, slots=1)
    try:
        prompt = engine.encode(PromptText((Segment(POST),)))
        if not engine.encoder_decoder:
            engine.score(prompt, [engine.tokenize(" yes"), engine.tokenize(" no")])
        engine.generate(prompt, max_tokens=4, sampling=Sampling()).text()
        engine.detokenize(list(range(64)))
    finally:
        engine.close()


def main() -> None:
    answers = os.fdopen(os.dup(1), "w")  # the answers' own channel: whatever the libraries print goes nowhere
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for line in sys.stdin:
        try:
            exercise(line.strip())
            answer = {"status": "ran", "message": ""}
        except MentalEdgeError as exc:
            answer = {"status": "refused", "message": str(exc)}
        except Exception:  # what the CLI would print as a traceback
            answer = {"status": "traceback", "message": traceback.format_exc()}
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    main()
