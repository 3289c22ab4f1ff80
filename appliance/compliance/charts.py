"""The report's charts, as inline SVG (WeasyPrint draws it into the PDF; nothing is fetched). Each
has a title for screen readers, and its numbers are in a table beside it."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH = 640
ROW = 24
LABEL = 150
# Pass, fail, not tested: distinguishable in grey print too (dark, light, hatched-grey).
COLOURS = {"pass": "#1b7a3a", "fail": "#c0392b", "not tested": "#9aa0a6"}


def _svg(title: str, height: int, body: list[str]) -> Markup:
    size = f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
    head = f'<svg xmlns="http://www.w3.org/2000/svg" {size} role="img">'
    return Markup(head + f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def stacked(title: str, rows: list[tuple[str, dict[str, int]]]) -> Markup:
    """One bar per row, split into pass, fail and not tested, with the counts written in."""
    height = ROW * len(rows) + 30
    top = max((sum(c.values()) for _, c in rows), default=0) or 1
    span = WIDTH - LABEL - 10
    body = []
    for i, (label, counts) in enumerate(rows):
        y = 4 + i * ROW
        body.append(
            f'<text x="{LABEL - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(label)}</text>'
        )
        x = float(LABEL)
        for status, colour in COLOURS.items():
            w = span * counts.get(status, 0) / top
            if w <= 0:
                continue
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 6}" fill="{colour}"/>')
            if w > 22:
                body.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + 13}" text-anchor="middle" font-size="10" fill="#fff">'
                    f"{counts[status]}</text>"
                )
            x += w
    legend_y = height - 8
    x = LABEL
    for status, colour in COLOURS.items():
        body.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{status}</text>')
        x += 110
    return _svg(title, height, body)


def bars(title: str, points: list[tuple[str, int]]) -> Markup:
    """Horizontal bars, one per (label, value), in the order given."""
    height = ROW * max(len(points), 1) + 6
    top = max((v for _, v in points), default=0) or 1
    span = WIDTH - LABEL - 70
    body = []
    for i, (label, value) in enumerate(points):
        y = 4 + i * ROW
        w = max(span * value / top, 1)
        short = label if len(label) <= 24 else label[:23] + "…"
        body.append(
            f'<text x="{LABEL - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(short)}</text>'
        )
        body.append(f'<rect x="{LABEL}" y="{y}" width="{w:.1f}" height="{ROW - 6}" fill="#34495e"/>')
        body.append(f'<text x="{LABEL + w + 6:.1f}" y="{y + 15}" font-size="12">{value:,}</text>')
    return _svg(title, height, body)
