"""Charts drawn on the server as SVG: no script and nothing from elsewhere. Each chart has a title,
and each bar a title with its value, which browsers show on hover and screen readers read out."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

WIDTH = 480
ROW = 24
LABEL = 190
MAX_LABELS = 7  # column labels shown under a column chart; more would overlap


def _open(title: str, height: int) -> list[str]:
    slug = "chart-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{slug}">',
        f'<title id="{slug}">{escape(title)}</title>',
    ]


def columns(title: str, points: list[tuple[str, int]], height: int = 200) -> Markup:
    """Vertical bars, one per point (label, value), e.g. blocked attempts per day."""
    top = max((v for _, v in points), default=0) or 1
    plot_h = height - 40
    step = (WIDTH - 50) / max(len(points), 1)
    every = -(-len(points) // MAX_LABELS) or 1
    parts = [
        *_open(title, height),
        f'<line class="axis" x1="40" y1="{plot_h + 5}" x2="{WIDTH - 5}" y2="{plot_h + 5}"/>',
        f'<text x="35" y="14" text-anchor="end">{top:,}</text>',
        f'<text x="35" y="{plot_h + 5}" text-anchor="end">0</text>',
    ]
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = 45 + i * step
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{plot_h + 5 - h:.1f}" width="{max(step - 4, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {value:,}</title></rect>'
        )
        if (len(points) - 1 - i) % every == 0:
            centre, base = x + step / 2 - 2, height - 15
            parts.append(f'<text x="{centre:.1f}" y="{base}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(title: str, points: list[tuple[str, int]]) -> Markup:
    """Horizontal bars, one per (label, value), largest first as given."""
    top = max((v for _, v in points), default=0) or 1
    height = ROW * max(len(points), 1) + 10
    parts = _open(title, height)
    for i, (label, value) in enumerate(points):
        y = 5 + i * ROW
        w = (WIDTH - LABEL - 60) * value / top
        short = label if len(label) <= 22 else label[:21] + "…"
        parts.append(f'<text x="{LABEL - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>')
        parts.append(
            f'<rect class="bar" x="{LABEL}" y="{y + 3}" width="{max(w, 1):.1f}" height="{ROW - 8}">'
            f"<title>{escape(label)}: {value:,}</title></rect>"
        )
        parts.append(f'<text x="{LABEL + w + 6:.1f}" y="{y + 15}">{value:,}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
