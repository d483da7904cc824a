"""The one place fleetward builds report pages and figures: self-contained HTML, inline images.

Every report in the project (rescore, transition, the simulator's run report, the demo, the
load test, dogfooding, the console's plots) draws its figures with matplotlib's Agg backend
through `figure`, turns them into inline images with `figure_png` (or `figure_svg`), and lays
out escaped tables and sections with `html_table` and `html_page`. A page is one file with no
external resources, so it can be mailed or attached to a ticket as it is.

matplotlib is imported on first use: importing this module costs nothing, so the backend's
routes and the agent's tools never pay for it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["figure", "figure_png", "figure_svg", "html_page", "html_table", "image_tag"]

_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}"
)


def figure(width_in: float, height_in: float, **subplots: Any) -> tuple[Any, Any]:
    """A new (figure, axes) of `width_in` x `height_in` inches on the Agg (file-only) backend.

    Keyword arguments go to `matplotlib.pyplot.subplots` (e.g. `ncols=2`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width_in, height_in), **subplots)


def _save(fig: Any, fmt: str, **savefig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, **savefig)
    finally:
        plt.close(fig)
    return buf.getvalue()


def figure_png(fig: Any, *, dpi: int = 90, tight: bool = True) -> str:
    """A matplotlib figure as a base64 PNG string, for `image_tag` (the figure is closed)."""
    extra: dict[str, Any] = {"bbox_inches": "tight"} if tight else {}
    return base64.b64encode(_save(fig, "png", dpi=dpi, **extra)).decode()


def figure_svg(fig: Any) -> bytes:
    """A matplotlib figure as SVG bytes; equal figures give equal bytes (cacheable).

    No timestamp in the metadata, and a fixed salt for the ids matplotlib hashes (clip paths,
    glyphs), which it salts with a random uuid by default.
    """
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "fleetward"}):
        return _save(fig, "svg", bbox_inches="tight", metadata={"Date": None})


def image_tag(png_b64: str, alt: str = "plot") -> str:
    """An `<img>` that carries the base64 PNG inline."""
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{png_b64}'>"


def html_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table of `headers` over `rows`, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(
    title: str,
    sections: Sequence[tuple[str, str]],
    images: Sequence[str] = (),
    *,
    intro: str = "",
    extra_css: str = "",
) -> str:
    """A self-contained page: escaped title, `intro` html, (heading, html) sections, PNG images.

    Section bodies and `intro` are HTML as given (build them with `html_table`, `image_tag`
    or `html.escape`); a section whose heading is empty has no heading of its own. `images`
    are base64 PNGs (`figure_png`) shown after the sections; `extra_css` adds page styles.
    """
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}{extra_css}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{intro}"
    ]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}" if heading else content)
    for img in images:
        parts.append(f"<p>{image_tag(img)}</p>")
    parts.append("</body></html>")
    return "".join(parts)
