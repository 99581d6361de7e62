"""Helper run as a subprocess by test_io_records: writes N records slowly with resume, so that
the test can SIGKILL it mid-run and then resume. Not a test module (leading underscore)."""

import sys
import time

from mental_edge.io import RecordWriter

path, total, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with RecordWriter(path, resume=True, fsync_every=5) as writer:
    for n in range(total):
        for task in ("DR", "SAD"):
            if (str(n), task) in writer.done:
                continue
            writer.write(
                {
                    "id": str(n),
                    "task": task,
                    "label": "yes",
                    "probabilities": {"yes": 0.75, "no": 0.25},
                    "explanation": f'row {n}\nwith a newline, a comma and "quotes"',
                }
            )
            time.sleep(delay)
