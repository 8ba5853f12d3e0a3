"""Charts as server-rendered SVG: nothing fetched at view time, nothing scripted. Every chart
carries a <title> and a text table beside it on the page, so it is readable without colour and
by a screen reader; series differ by dash pattern as well as colour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Final

WIDTH: Final = 640
HEIGHT: Final = 200
_MARGIN: Final = 40
_COLOURS: Final = ("#1f4e79", "#a33b20", "#2e7d32", "#6a1b9a", "#8d6e00", "#37474f")
_DASHES: Final = ("", "6 3", "2 2", "8 2 2 2", "1 3", "10 4")

Series = Sequence[tuple[float, float]]


def _scale(value: float, low: float, high: float, size: float) -> float:
    return 0.0 if high <= low else (value - low) / (high - low) * size


def line_chart(title: str, series: Mapping[str, Series], unit: str) -> str:
    """One line per series over shared axes (x: time, y: from 0 to the largest value)."""
    points = [p for values in series.values() for p in values]
    inner_w, inner_h = WIDTH - 2 * _MARGIN, HEIGHT - 2 * _MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{_MARGIN}" y="{_MARGIN}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#999"/>',
    ]
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>')
        return "".join(parts) + "</svg>"
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_high = max(max(p[1] for p in points), 1.0)
    parts.append(
        f'<text x="4" y="{_MARGIN}" font-size="11">{y_high:g} {escape(unit)}</text>'
        f'<text x="4" y="{HEIGHT - _MARGIN}" font-size="11">0</text>'
    )
    for index, (name, values) in enumerate(sorted(series.items())):
        coords = " ".join(
            f"{_MARGIN + _scale(x, x_low, x_high, inner_w):.1f},"
            f"{HEIGHT - _MARGIN - _scale(y, 0.0, y_high, inner_h):.1f}"
            for x, y in values
        )
        colour, dash = _COLOURS[index % len(_COLOURS)], _DASHES[index % len(_DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash_attr} '
            f'points="{coords}"><title>{escape(name)}</title></polyline>'
        )
        legend_y = HEIGHT - 8
        legend_x = _MARGIN + index * 100
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 20}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{legend_x + 24}" y="{legend_y}" font-size="11">{escape(name)}</text>'
        )
    return "".join(parts) + "</svg>"


def bar_chart(title: str, counts: Mapping[str, int]) -> str:
    """Horizontal bars with their label and count written out."""
    rows = list(counts.items())
    height = max(len(rows), 1) * 22 + 30
    top = max((count for _, count in rows), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    if not rows:
        parts.append('<text x="10" y="20">none</text>')
    for index, (label, count) in enumerate(rows):
        y = 10 + index * 22
        width = _scale(count, 0, top, WIDTH - 260)
        parts.append(
            f'<text x="4" y="{y + 14}" font-size="12">{escape(label)}</text>'
            f'<rect x="200" y="{y}" width="{width:.1f}" height="16" fill="{_COLOURS[0]}"/>'
            f'<text x="{204 + width:.1f}" y="{y + 13}" font-size="12">{count}</text>'
        )
    return "".join(parts) + "</svg>"
