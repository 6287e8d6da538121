"""Charts drawn on the server as inline SVG: no script, no third-party library, and the
numbers are in the markup (each bar has a <title>), so they read without JS too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from mailer.adapters.ledger_views import MinuteCount

COLOURS = {
    "receipt sent": "#2f7d32",
    "receipt captured": "#66bb6a",
    "newsletter sent": "#1565c0",
    "newsletter captured": "#64b5f6",
    "receipt failed": "#c62828",
    "newsletter failed": "#ef5350",
    "receipt retrying": "#ef6c00",
    "newsletter retrying": "#ffa726",
    "receipt suppressed": "#6d4c41",
    "newsletter suppressed": "#a1887f",
    "newsletter cancelled": "#9e9e9e",
    "receipt cancelled": "#bdbdbd",
    "newsletter bounced": "#8e24aa",
    "receipt bounced": "#ba68c8",
    "confirmation sent": "#00838f",
    "confirmation captured": "#4dd0e1",
    "confirmation failed": "#ad1457",
    "confirmation retrying": "#f9a825",
    "confirmation suppressed": "#8d6e63",
    "confirmation bounced": "#7b1fa2",
}
WIDTH, HEIGHT, LEFT, BOTTOM = 720, 200, 44, 22


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    colour: str
    total: int


def sends_chart(
    counts: Sequence[MinuteCount], *, now: datetime, minutes: int = 60
) -> tuple[Markup, list[Series]]:
    """A stacked bar per minute, by kind and outcome; returns the SVG and its legend."""
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    by_minute: dict[datetime, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for c in counts:
        name = f"{c.kind} {c.status}"
        minute = c.minute.replace(second=0, microsecond=0)
        if not start <= minute <= end:
            continue
        by_minute.setdefault(minute, {})[name] = by_minute.get(minute, {}).get(name, 0) + c.count
        totals[name] = totals.get(name, 0) + c.count
    order = [name for name in COLOURS if name in totals] + sorted(
        name for name in totals if name not in COLOURS
    )
    peak = max((sum(v.values()) for v in by_minute.values()), default=0)
    scale = _nice(peak)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - 6
    bar_w = plot_w / minutes
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}"'
        f' height="{HEIGHT}" aria-label="outcomes recorded per minute, last {minutes} minutes">',
        f'<line x1="{LEFT}" y1="{6 + plot_h}" x2="{WIDTH - 4}" y2="{6 + plot_h}" stroke="#888"/>',
    ]
    for fraction in (0.5, 1.0):
        y = 6 + plot_h - plot_h * fraction
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 4}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{round(scale * fraction)}</text>"
        )
    for i in range(minutes):
        minute = start + timedelta(minutes=i)
        values = by_minute.get(minute, {})
        x = LEFT + i * bar_w
        y = 6 + plot_h
        for name in order:
            n = values.get(name, 0)
            if not n:
                continue
            h = plot_h * n / scale if scale else 0
            y -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}"'
                f' height="{h:.1f}" fill="{COLOURS.get(name, "#555")}">'
                f"<title>{minute:%H:%M} {escape(name)}: {n}</title></rect>"
            )
        if i % 10 == 0 or i == minutes - 1:
            anchor = "end" if i == minutes - 1 else "middle"
            parts.append(
                f'<text x="{x + bar_w:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}"'
                f' font-size="11">{minute:%H:%M}</text>'
            )
    parts.append("</svg>")
    legend = [Series(name, COLOURS.get(name, "#555"), totals[name]) for name in order]
    return Markup("".join(parts)), legend  # noqa: S704 - built here from numbers and escaped names


def _nice(peak: int) -> int:
    """A round top for the axis, at least the peak."""
    if peak <= 0:
        return 1
    step = 1
    while step * 10 < peak:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= peak:
            return step * factor
    return step * 10
