"""The dashboard's charts (drawn by appliance/charts.py), sized for its panels; the stylesheet sets
their colours and text."""

from __future__ import annotations

from markupsafe import Markup, escape

from appliance import charts

WIDTH = 480
LABEL = 190
MAX_LABELS = 7  # column labels shown under a column chart; more would overlap


def columns(title: str, points: list[tuple[str, int]], height: int = 200) -> Markup:
    """Vertical bars, one per point (label, value), e.g. blocked attempts per day."""
    top = max((v for _, v in points), default=0) or 1
    plot_h = height - 40
    step = (WIDTH - 50) / max(len(points), 1)
    every = -(-len(points) // MAX_LABELS) or 1
    body = [
        f'<line class="axis" x1="40" y1="{plot_h + 5}" x2="{WIDTH - 5}" y2="{plot_h + 5}"/>',
        f'<text x="35" y="14" text-anchor="end">{top:,}</text>',
        f'<text x="35" y="{plot_h + 5}" text-anchor="end">0</text>',
    ]
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = 45 + i * step
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{plot_h + 5 - h:.1f}" width="{max(step - 4, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {value:,}</title></rect>'
        )
        if (len(points) - 1 - i) % every == 0:
            centre, base = x + step / 2 - 2, height - 15
            body.append(f'<text x="{centre:.1f}" y="{base}" text-anchor="middle">{escape(label)}</text>')
    return charts.svg(title, WIDTH, height, body)


def bars(title: str, points: list[tuple[str, int]]) -> Markup:
    """Horizontal bars, one per (label, value), largest first as given."""
    return charts.bars(title, points, WIDTH, LABEL)
