"""Small server-rendered plots (matplotlib SVG) for the console's pages, served apart.

Drawing a figure costs tens of milliseconds, more than the rest of a page. So a page only
registers what each plot shows (`PlotBook.register`, which returns a key derived from the
values) and links `<img src=".../plots/KEY.svg">`; the browser fetches the images beside the
page, and `PlotBook.render` draws each one once per distinct input (an LRU of bounded size).
Reads need no JavaScript, and the page's CSP needs no inline styles (an SVG image carries its
own). A key the book no longer holds (a restart, or evicted) answers 404 and the alt text stays.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from backend.report import figure, figure_svg

__all__ = ["PlotBook"]

_LOCK = threading.Lock()  # pyplot's state machine is not thread-safe
Series = tuple[tuple[str, tuple[float, ...]], ...]


def _figure(width: float, height: float) -> tuple[Any, Any]:
    fig, ax = figure(width, height)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    return fig, ax


@functools.lru_cache(maxsize=256)
def _day_plot(title: str, labels: tuple[str, ...], series: Series) -> bytes:
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
        return figure_svg(fig)


@functools.lru_cache(maxsize=256)
def _bar_plot(title: str, labels: tuple[str, ...], values: tuple[float, ...], ylabel: str) -> bytes:
    with _LOCK:
        fig, ax = _figure(4.2, 1.8)
        ax.bar(range(len(labels)), values, color="#3a6ea5")
        ax.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 6 else 0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=7)
        return figure_svg(fig)


@functools.lru_cache(maxsize=64)
def _sweep_plot(points: tuple[tuple[float, float, float], ...], budget: float) -> bytes:
    with _LOCK:
        fig, ax = _figure(4.2, 2.4)
        ax.plot([p[1] for p in points], [p[2] for p in points], "o-", markersize=3)
        ax.axvline(budget, color="#b22", ls="--", label="per-org FP budget")
        ax.set_xlabel("worst org: new FP alerts / day", fontsize=7)
        ax.set_ylabel("recall", fontsize=7)
        ax.set_title("threshold sweep (new version)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        return figure_svg(fig)


_KINDS: dict[str, Any] = {"day": _day_plot, "bar": _bar_plot, "sweep": _sweep_plot}


class PlotBook:
    """What each registered plot shows, by key, and who may see it (bounded, thread-safe)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[str | None, str, tuple[Any, ...]]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def register(self, kind: str, org_id: str | None, *args: Any) -> str:
        """Remember one plot's inputs; `org_id` None means admins only. Returns its key."""
        if kind not in _KINDS:
            raise ValueError(f"no plot kind {kind!r}")
        key = hashlib.sha256(repr((kind, org_id, args)).encode()).hexdigest()[:32]
        with self._lock:
            self._entries[key] = (org_id, kind, args)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return key

    def day(self, org_id: str | None, title: str, labels: Sequence[str], series: Series) -> str:
        """A small line plot of per-day series."""
        return self.register("day", org_id, title, tuple(labels), series)

    def bar(
        self, org_id: str | None, title: str, labels: Sequence[str], values: Sequence[float],
        ylabel: str,
    ) -> str:  # fmt: skip
        """A small bar plot."""
        return self.register("bar", org_id, title, tuple(labels), tuple(values), ylabel)

    def sweep(self, points: Sequence[tuple[float, float, float]], budget: float) -> str:
        """The threshold sweep (worst org's new FP alerts/day against recall), admins only."""
        return self.register("sweep", None, tuple(points), budget)

    def render(self, key: str) -> tuple[str | None, bytes] | None:
        """The plot's owner org and its SVG bytes, or None for an unknown key."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        org_id, kind, args = entry
        return org_id, _KINDS[kind](*args)
