"""backend.report: escaped, self-contained pages and figures that close after drawing."""

from __future__ import annotations

import base64
import re

import matplotlib.pyplot as plt

from backend.report import figure, figure_png, figure_svg, html_page, html_table, image_tag

HOSTILE = "<script>alert('x')</script>&"


def _drawn(width_in: float = 3.0) -> object:
    fig, ax = figure(width_in, 2.0)
    ax.plot([0, 1, 2], [3, 1, 2], label="line")
    ax.set_title("a title")
    return fig


def test_html_table_escapes_every_header_and_cell():
    out = html_table([HOSTILE, "n"], [(HOSTILE, 3), ("plain", None)])
    assert "<script>" not in out
    assert out.count("&lt;script&gt;") == 2
    assert "<td>3</td>" in out and "<td>None</td>" in out
    assert out.count("<tr>") == 3  # one header row, two body rows


def test_html_page_is_self_contained_and_escapes_the_title():
    png = figure_png(_drawn())
    page = html_page(
        HOSTILE,
        [("Heading <b>", "<p>body</p>"), ("", "<h2>own heading</h2>")],
        [png],
        intro="<p>intro</p>",
        extra_css=".ok{color:#060}",
    )
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") == 2  # <title> and <h1>
    assert "<h2>Heading &lt;b&gt;</h2><p>body</p>" in page
    assert "<h2></h2>" not in page and "<h2>own heading</h2>" in page  # no empty heading
    assert page.index("<p>intro</p>") < page.index("<p>body</p>")
    assert ".ok{color:#060}" in page
    assert f"data:image/png;base64,{png}" in page
    # nothing to fetch: every src/href is inline data
    assert all(u.startswith("data:") for u in re.findall(r"(?:src|href)=['\"]([^'\"]*)", page))


def test_figure_png_is_a_png_and_closes_the_figure():
    fig = _drawn()
    assert fig.number in plt.get_fignums()  # type: ignore[attr-defined]
    raw = base64.b64decode(figure_png(fig), validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    assert fig.number not in plt.get_fignums()  # type: ignore[attr-defined]


def test_figure_png_dpi_sets_the_pixel_size():
    def width_px(png: str) -> int:
        return int.from_bytes(base64.b64decode(png)[16:20], "big")  # IHDR width

    small = width_px(figure_png(_drawn(), dpi=50, tight=False))
    large = width_px(figure_png(_drawn(), dpi=100, tight=False))
    assert (small, large) == (150, 300)  # 3 in at 50 and 100 dpi


def test_figure_svg_gives_equal_bytes_for_equal_figures():
    first, second = figure_svg(_drawn()), figure_svg(_drawn())
    assert first.lstrip().startswith(b"<?xml") and b"<svg" in first
    assert first == second  # no timestamp in the metadata
    assert not plt.get_fignums()


def test_image_tag_escapes_the_alt_text():
    tag = image_tag("AAAA", alt="a 'quoted' <alt>")
    assert tag.startswith("<img ") and "src='data:image/png;base64,AAAA'" in tag
    assert "<alt>" not in tag and "&#x27;quoted&#x27;" in tag
