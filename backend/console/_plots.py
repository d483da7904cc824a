"""Small server-rendered plots (matplotlib SVG) for the console's pages.

Each plot is returned as a `data:image/svg+xml` URI for an `<img>` with alt text, so pages
read without JavaScript and the page's CSP needs no inline styles. Rendering a figure costs
tens of milliseconds, so plots are cached by their input values (an LRU of bounded size): a
page whose figures did not change since the last request reuses the same bytes.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["bar_plot", "day_plot", "sweep_plot"]

_LOCK = threading.Lock()  # pyplot's state machine is not thread-safe


def _svg_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    return fig, ax


@functools.lru_cache(maxsize=256)
def day_plot(
    title: str, labels: tuple[str, ...], series: tuple[tuple[str, tuple[float, ...]], ...]
) -> str:
    """A small line plot of one or more per-day series (x: day labels)."""
    with _LOCK:
        fig, ax = _figure(4.2, 1.8)
        x = range(len(labels))
        for name, values in series:
            ax.plot(x, values, marker="o", markersize=2.5, linewidth=1.2, label=name)
        step = max(1, len(labels) // 7)
        ax.set_xticks(list(x)[::step], labels[::step])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        if len(series) > 1:
            ax.legend(fontsize=7, frameon=False)
        return _svg_uri(fig)


@functools.lru_cache(maxsize=256)
def bar_plot(title: str, labels: tuple[str, ...], values: tuple[float, ...], ylabel: str) -> str:
    """A small bar plot (one bar per label)."""
    with _LOCK:
        fig, ax = _figure(4.2, 1.8)
        ax.bar(range(len(labels)), values, color="#3a6ea5")
        ax.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 6 else 0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=7)
        return _svg_uri(fig)


def sweep_plot(points: Sequence[tuple[float, float, float]], budget: float) -> str:
    """The threshold sweep: worst org's new FP alerts/day against recall, per threshold."""
    return _sweep_plot(tuple(points), budget)


@functools.lru_cache(maxsize=64)
def _sweep_plot(points: tuple[tuple[float, float, float], ...], budget: float) -> str:
    with _LOCK:
        fig, ax = _figure(4.2, 2.4)
        ax.plot([p[1] for p in points], [p[2] for p in points], "o-", markersize=3)
        ax.axvline(budget, color="#b22", ls="--", label="per-org FP budget")
        ax.set_xlabel("worst org: new FP alerts / day", fontsize=7)
        ax.set_ylabel("recall", fontsize=7)
        ax.set_title("threshold sweep (new version)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        return _svg_uri(fig)
