"""Bar charts as SVG made on the server: the admin page fetches nothing to draw them.

One chart is a series of hourly bars, each stacked by team, with a legend.  Every text
in it is escaped; colours come from a fixed palette, in the order teams first appear,
so a team keeps its colour across the page's charts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape

import attrs

#: Colours that stay apart for people with the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 8, 12, 28


@attrs.frozen
class HourlySeries:
    """Values per team over consecutive hours: ``values[team][i]`` is hour ``hours[i]``."""

    hours: Sequence[int]
    values: Mapping[str, Sequence[float]]


def team_colours(teams: Sequence[str]) -> dict[str, str]:
    """A colour for each team, in order, the palette repeating past its end."""
    return {team: PALETTE[i % len(PALETTE)] for i, team in enumerate(teams)}


def stacked_bars(series: HourlySeries, *, title: str, unit: str, colours: Mapping[str, str]) -> str:
    """An ``<svg>`` of ``series`` as bars stacked by team, ``unit`` naming what they count."""
    hours = list(series.hours)
    totals = [sum(values[i] for values in series.values.values()) for i in range(len(hours))]
    peak = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(hours), 1)
    bar = max(slot * 0.8, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        # The axes, and the peak's value at the top of the vertical one.
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#888"/>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH - _RIGHT}" y2="{_TOP + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end" font-size="11">'
        f"{_short(peak)}</text>",
        f'<text x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i, hour in enumerate(hours):
        x = _LEFT + i * slot + (slot - bar) / 2
        y = float(_TOP + plot_h)
        for team, values in series.values.items():
            value = values[i]
            if value <= 0:
                continue
            height = value / peak * plot_h
            y -= height
            label = f"{team}: {_short(value)} {unit} in the hour from {_hour_label(hour)} UTC"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colours.get(team, "#888")}">'
                f"<title>{escape(label)}</title></rect>"
            )
    parts.extend(_hour_ticks(hours, slot))
    parts.append("</svg>")
    return "".join(parts)


def _hour_ticks(hours: Sequence[int], slot: float) -> list[str]:
    # A label every 6 bars for a day, every 24 for a week: four to seven labels.
    every = 6 if len(hours) <= 48 else 24
    ticks = []
    for i in range(0, len(hours), every):
        x = _LEFT + i * slot
        ticks.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="11">'
            f"{escape(_hour_label(hours[i], days=every == 24))}</text>"
        )
    return ticks


def _hour_label(hour: int, *, days: bool = False) -> str:
    moment = time.gmtime(hour)
    return time.strftime("%m-%d" if days else "%H:%M", moment)


def _short(value: float) -> str:
    """``1234567`` as ``1.2M``: axis labels stay short."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:g}"


def legend(colours: Mapping[str, str]) -> str:
    """The teams and their colours, as an HTML list."""
    items = "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{colour}"/></svg> {escape(team)}</li>'
        for team, colour in colours.items()
    )
    return f'<ul class="legend">{items}</ul>'
