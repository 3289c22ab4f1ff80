"""The report's charts (drawn by appliance/charts.py), sized for an A4 page; each has its numbers in a
table beside it."""

from __future__ import annotations

from markupsafe import Markup, escape

from appliance import charts

WIDTH = 640
LABEL = 150
# Pass, fail, not tested: distinguishable in grey print too (dark, light, hatched-grey).
COLOURS = {"pass": "#1b7a3a", "fail": "#c0392b", "not tested": "#9aa0a6"}


def stacked(title: str, rows: list[tuple[str, dict[str, int]]]) -> Markup:
    """One bar per row, split into pass, fail and not tested, with the counts written in."""
    row = charts.ROW
    height = row * len(rows) + 30
    top = max((sum(c.values()) for _, c in rows), default=0) or 1
    span = WIDTH - LABEL - 10
    body = []
    for i, (label, counts) in enumerate(rows):
        y = 4 + i * row
        body.append(
            f'<text x="{LABEL - 6}" y="{y + 15}" text-anchor="end" font-size="{charts.FONT_SIZE}">'
            f"{escape(label)}</text>"
        )
        x = float(LABEL)
        for status, colour in COLOURS.items():
            w = span * counts.get(status, 0) / top
            if w <= 0:
                continue
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>')
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
    return charts.svg(title, WIDTH, height, body)


def bars(title: str, points: list[tuple[str, int]]) -> Markup:
    """Horizontal bars, one per (label, value), in the order given."""
    return charts.bars(title, points, WIDTH, LABEL)
