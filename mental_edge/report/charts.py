"""The report's figures as inline SVG, drawn by matplotlib's SVG backend (the optional `report` extra).

matplotlib is imported on the first figure only, so the rest of mental-edge never needs it; `require()` turns
its absence into the one-line message the report command prints. `Figure` objects are used directly (no
pyplot): no global state, nothing opens a window. Each SVG's ids get a prefix of their own, because a page
holds many figures and matplotlib would otherwise reuse ids such as clip paths across them.
"""

from __future__ import annotations

import io
import itertools
import re

from mental_edge.errors import MentalEdgeError

INSTALL = "pip install 'mental-edge[report]'"
_COUNTER = itertools.count(1)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_ID = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
_COLOURS = {"bar": "#4c72b0", "unparsed": "#c44e52", "line": "#dd8452", "ideal": "#8c8c8c"}


def require() -> None:
    """A one-line error naming what to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MentalEdgeError(f"the HTML report draws its figures with matplotlib: {INSTALL}") from None


def label_distribution(counts: dict[str, int], unparsed: str) -> str:
    fig, ax = _figure(5.0, 0.5 + 0.32 * len(counts))
    labels = list(counts)[::-1]
    values = [counts[k] for k in labels]
    colours = [_COLOURS["unparsed"] if k == unparsed else _COLOURS["bar"] for k in labels]
    ax.barh(labels, values, color=colours)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value}", va="center", fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title("label distribution", fontsize=10)
    ax.margins(x=0.15)
    return _svg(fig)


def probability_histogram(chosen: list[float]) -> str:
    fig, ax = _figure(5.0, 2.4)
    ax.hist(chosen, bins=20, range=(0.0, 1.0), color=_COLOURS["bar"])
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of the chosen label")
    ax.set_ylabel("rows")
    ax.set_title(f"chosen label's probability ({len(chosen)} rows)", fontsize=10)
    return _svg(fig)


def confusion_heatmap(labels: list[str], columns: list[str], matrix: list[list[int]]) -> str:
    fig, ax = _figure(1.6 + 0.7 * len(columns), 1.2 + 0.5 * len(labels))
    top = max((max(row) for row in matrix), default=0) or 1
    ax.pcolormesh(range(len(columns) + 1), range(len(labels) + 1), matrix, cmap="Blues", vmin=0, vmax=top)
    for (i, j), value in _cells(matrix):
        ax.text(
            j + 0.5,
            i + 0.5,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > top / 2 else "black",
        )
    ax.set_xticks([j + 0.5 for j in range(len(columns))], columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()  # the first gold label on top, as in a table
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("confusion matrix", fontsize=10)
    return _svg(fig)


def reliability_diagram(reliability: list[dict], ece: float, brier: float) -> str:
    fig, ax = _figure(3.6, 3.4)
    ax.plot([0, 1], [0, 1], linestyle="--", color=_COLOURS["ideal"], linewidth=1, label="perfectly calibrated")
    centres = [(b["low"] + b["high"]) / 2 for b in reliability]
    widths = [b["high"] - b["low"] for b in reliability]
    ax.bar(centres, [b["accuracy"] for b in reliability], width=widths, color=_COLOURS["bar"], alpha=0.6,
           edgecolor="white", label="accuracy in bin")  # fmt: skip
    ax.plot([b["confidence"] for b in reliability], [b["accuracy"] for b in reliability], marker="o",
            color=_COLOURS["line"], linewidth=1, markersize=3, label="mean probability → accuracy")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("probability of the chosen label")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f}, Brier {brier:.3f})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)


def delta_intervals(rows: list[tuple[str, float, float, float]], title: str) -> str:
    """Deltas with their intervals, one line a (task, metric): (name, delta, low, high)."""
    fig, ax = _figure(5.0, 0.6 + 0.3 * len(rows))
    names = [r[0] for r in rows][::-1]
    deltas = [r[1] for r in rows][::-1]
    errors = [[r[1] - r[2] for r in rows][::-1], [r[3] - r[1] for r in rows][::-1]]
    ax.axvline(0, color=_COLOURS["ideal"], linewidth=1)
    ax.errorbar(deltas, range(len(rows)), xerr=errors, fmt="o", color=_COLOURS["bar"], markersize=4, capsize=3)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_xlabel("after minus before (95% paired bootstrap interval)")
    ax.set_title(title, fontsize=10)
    return _svg(fig)


def score_distribution(values_by_run: dict[str, list[float]], metric: str) -> str:
    """Per-row explanation scores of one or more runs: a box per run over its rows, with the rows as dots."""
    fig, ax = _figure(1.6 + 1.3 * len(values_by_run), 3.0)
    names = list(values_by_run)
    data = [values_by_run[name] for name in names]
    ax.boxplot(data, widths=0.5, showfliers=False, medianprops={"color": _COLOURS["line"]})
    for x, values in enumerate(data, start=1):
        offsets = [x + 0.3 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]  # spread, no randomness
        ax.scatter(offsets, values, s=6, color=_COLOURS["bar"], alpha=0.6, linewidths=0)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8, rotation=15, ha="right")
    ax.set_ylabel(f"{metric} per row")
    ax.set_title(f"{metric} of each explanation ({', '.join(str(len(v)) for v in data)} rows)", fontsize=10)
    return _svg(fig)


def _cells(matrix):
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            yield (i, j), value


def _figure(width: float, height: float):
    require()
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable, no font outlines
    matplotlib.rcParams["svg.hashsalt"] = "mental-edge"  # the same page for the same run
    fig = Figure(figsize=(width, max(height, 1.4)), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML declaration and doctype: the SVG is inline
    text = _METADATA.sub("", text)  # matplotlib's RDF block: namespaces and a date, nothing to show
    prefix = f"f{next(_COUNTER)}-"
    return _ID.sub(lambda m: m.group(1) + prefix + m.group(2), text)
