"""Charts drawn on the server as inline SVG, for the web UI's dashboard (webui/charts.py) and the
compliance report, in the browser and in the PDF WeasyPrint draws (appliance/compliance/charts.py): no
script and nothing fetched. Each chart has a title, and each bar a title with its value, which
browsers show on hover and screen readers read out.

Colours and text sizes are written in as attributes, which is all the report has; the web UI's
stylesheet overrides them (`.chart .bar`, `.chart text`) to follow its own look."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

ROW = 24  # a horizontal bar and the gap below it
LABEL_CHARS = 22  # longer labels are cut short; the bar's title has them whole
VALUE_SPACE = 60  # right of the longest bar, for its value
BAR_COLOUR = "#34495e"
FONT_SIZE = 12


def svg(title: str, width: int, height: int, body: list[str]) -> Markup:
    """A chart of this size around the drawn body, with its title as the picture's accessible name."""
    slug = "chart-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{slug}">'
    )
    return Markup(head + f'<title id="{slug}">{escape(title)}</title>' + "".join(body) + "</svg>")


def bars(title: str, points: list[tuple[str, int]], width: int, label: int) -> Markup:
    """Horizontal bars, one per (label, value), in the order given, with the labels right-aligned in a
    column `label` wide on the left and each value written after its bar."""
    top = max((v for _, v in points), default=0) or 1
    height = ROW * max(len(points), 1) + 10
    body = []
    for i, (name, value) in enumerate(points):
        y = 5 + i * ROW
        w = max((width - label - VALUE_SPACE) * value / top, 1)
        short = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        body += [
            f'<text x="{label - 6}" y="{y + 15}" text-anchor="end" font-size="{FONT_SIZE}">'
            f"{escape(short)}</text>",
            f'<rect class="bar" x="{label}" y="{y + 3}" width="{w:.1f}" height="{ROW - 8}" '
            f'fill="{BAR_COLOUR}"><title>{escape(name)}: {value:,}</title></rect>',
            f'<text x="{label + w + 6:.1f}" y="{y + 15}" font-size="{FONT_SIZE}">{value:,}</text>',
        ]
    return svg(title, width, height, body)
