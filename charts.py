"""Charts for the analyst console, drawn on the server as inline SVG.

The console must work on a bank's network with no internet access, so it loads no chart library:
each chart is a few rectangles and labels written here. One kind of chart serves every page, a
horizontal bar chart with one or more series per row: values may be negative (a risk component
that took points away, a factor that pushed a score down), so bars grow left or right of zero.
Colours come from CSS classes (the console's Content-Security-Policy allows no inline style), and
every bar carries its label and value as text, so no reading depends on colour alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import Callable, Sequence

from markupsafe import Markup, escape

LABEL_WIDTH = 210
PLOT_WIDTH = 400
VALUE_ROOM = 64  # on each side of the plot, for the value written at a bar's end
BAR_HEIGHT = 14
BAR_GAP = 3
ROW_GAP = 10
LEGEND_HEIGHT = 22
MAX_LABEL_CHARACTERS = 30
_chart_ids = count(1)


@dataclass(frozen=True)
class Series:
    """One set of bars: ``values`` line up with the chart's labels; None draws no bar ("n/a")."""

    name: str
    values: Sequence[float | None]
    tone: str  # the CSS class of its bars: one of the console stylesheet's tones


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series],
              value_format: Callable[[float], str] = "{:.2f}".format, reference: float | None = None,
              reference_label: str = "") -> Markup:
    """A horizontal bar chart of ``series`` by ``labels``; ``reference`` draws a dashed line (chance, a
    threshold) that the bars are read against."""
    chart_id = f"chart-{next(_chart_ids)}"
    scale = _Scale.covering([v for s in series for v in s.values if v is not None] + [0.0] +
                            ([reference] if reference is not None else []))
    legend = LEGEND_HEIGHT if len(series) > 1 else 0
    row_height = len(series) * (BAR_HEIGHT + BAR_GAP) + ROW_GAP
    height = legend + len(labels) * row_height + ROW_GAP + 16
    width = LABEL_WIDTH + 2 * VALUE_ROOM + PLOT_WIDTH
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-labelledby="{chart_id}">', f'<title id="{chart_id}">{escape(title)}</title>']
    if legend:
        parts += _legend(series)
    for row, label in enumerate(labels):
        top = legend + row * row_height + ROW_GAP / 2
        parts.append(_row_label(label, top + len(series) * (BAR_HEIGHT + BAR_GAP) / 2))
        for position, one in enumerate(series):
            parts.append(_bar(one, one.values[row], label, scale, top + position * (BAR_HEIGHT + BAR_GAP),
                              value_format))
    zero = scale.x(0.0)
    parts.append(f'<line class="axis" x1="{zero:.1f}" x2="{zero:.1f}" y1="{legend}" y2="{height - 16}"/>')
    if reference is not None:
        parts += _reference_line(scale.x(reference), legend, height, reference_label)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class _Scale:
    low: float
    high: float

    @classmethod
    def covering(cls, values: Sequence[float]) -> "_Scale":
        low, high = min(values), max(values)
        return cls(low, high if high > low else low + 1.0)

    def x(self, value: float) -> float:
        return LABEL_WIDTH + VALUE_ROOM + (value - self.low) / (self.high - self.low) * PLOT_WIDTH


def _legend(series: Sequence[Series]) -> list[str]:
    parts, x = [], LABEL_WIDTH + VALUE_ROOM
    for one in series:
        parts.append(f'<rect class="bar {escape(one.tone)}" x="{x}" y="4" width="12" height="12"/>'
                     f'<text class="legend" x="{x + 16}" y="14">{escape(one.name)}</text>')
        x += 24 + 7 * len(one.name)
    return parts


def _row_label(label: str, middle: float) -> str:
    shown = label if len(label) <= MAX_LABEL_CHARACTERS else label[:MAX_LABEL_CHARACTERS - 1] + "…"
    return (f'<text class="label" x="{LABEL_WIDTH - 6}" y="{middle + 4:.1f}" text-anchor="end">'
            f'<title>{escape(label)}</title>{escape(shown)}</text>')


def _bar(series: Series, value: float | None, label: str, scale: _Scale, top: float,
         value_format: Callable[[float], str]) -> str:
    zero = scale.x(0.0)
    middle = top + BAR_HEIGHT / 2 + 4
    if value is None:
        return f'<text class="value" x="{zero + 4:.1f}" y="{middle:.1f}">n/a</text>'
    end = scale.x(value)
    left, width = min(zero, end), abs(end - zero)
    text = value_format(value)
    anchor, text_x = ("start", end + 4) if value >= 0 else ("end", end - 4)
    return (f'<rect class="bar {escape(series.tone)}" x="{left:.1f}" y="{top:.1f}" width="{max(width, 1):.1f}" '
            f'height="{BAR_HEIGHT}"><title>{escape(label)}, {escape(series.name)}: {escape(text)}</title></rect>'
            f'<text class="value" x="{text_x:.1f}" y="{middle:.1f}" text-anchor="{anchor}">{escape(text)}</text>')


def _reference_line(x: float, top: float, height: float, label: str) -> list[str]:
    return [f'<line class="reference" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 16}"/>',
            f'<text class="legend" x="{x:.1f}" y="{height - 3}" text-anchor="middle">{escape(label)}</text>']
