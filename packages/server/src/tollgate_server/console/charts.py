"""Stacked bar charts as SVG drawn on the server: no script, nothing for the CSP to allow.

Colours are CSS classes (`series-0` ... `series-7` in console.css), never inline styles. Each
bar segment has a <title> (the browser's tooltip), and the chart is an image with a text
description, next to a table with the same numbers for screen readers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta

from tollgate_server.console.render import Html, esc, join
from tollgate_server.services.console_stats import DayModel

SERIES = 8
"""Distinct colours; models past the seventh share the last one as "other"."""
WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP = 64, 28, 12


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def stacked_by_day(
    *,
    title: str,
    rows: Sequence[DayModel],
    days: Sequence[date],
    value: Callable[[DayModel], int],
    label: Callable[[int], str],
) -> Html:
    """One bar per day in `days`, one segment per model, heights from `value`."""
    totals_by_model: dict[str, int] = {}
    for row in rows:
        totals_by_model[row.model] = totals_by_model.get(row.model, 0) + value(row)
    ranked = sorted(totals_by_model, key=lambda m: (-totals_by_model[m], m))
    shown = ranked[: SERIES - 1] if len(ranked) > SERIES else ranked
    series = {model: i for i, model in enumerate(shown)}
    other = len(shown) if len(ranked) > len(shown) else None

    stacks: dict[date, list[tuple[int, str, int]]] = {day: [] for day in days}
    for row in rows:
        if row.day not in stacks or value(row) <= 0:
            continue
        index = series.get(row.model, other if other is not None else 0)
        stacks[row.day].append((index, row.model, value(row)))
    peak = max((sum(v for _, _, v in stack) for stack in stacks.values()), default=0) or 1

    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(1, len(days))
    bar_w = max(2.0, step * 0.7)
    parts: list[str] = []
    for tick in (0, 0.5, 1):
        y = TOP + plot_h * (1 - tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(label(round(peak * tick)))}</text>"
        )
    for i, day in enumerate(days):
        x = LEFT + i * step + (step - bar_w) / 2
        base = float(TOP + plot_h)
        for index, model, amount in sorted(stacks[day]):
            h = plot_h * amount / peak
            base -= h
            parts.append(
                f'<rect class="series-{index}" x="{x:.1f}" y="{base:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>'
                f"{esc(day.isoformat())} {esc(model)}: {esc(label(amount))}</title></rect>"
            )
        if len(days) <= 7 or i % 5 == 0 or i == len(days) - 1:
            parts.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{esc(day.strftime("%m-%d"))}</text>'
            )
    legend_items = [(series[m], m) for m in shown]
    if other is not None:
        legend_items.append((other, "other models"))
    legend = join(
        f'<li><span class="swatch series-{i}" aria-hidden="true"></span>{esc(m)}</li>'
        for i, m in legend_items
    )
    total = sum(totals_by_model.values())
    description = (
        f"{title}: {label(total)} in all over {len(days)} days"
        + (f", most from {ranked[0]}" if ranked else ", nothing yet")
        + "."
    )
    return Html(
        f'<figure class="chart"><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{esc(description)}" preserveAspectRatio="xMidYMid meet">'
        f"{join(parts)}</svg><figcaption>{esc(title)}"
        f'<ul class="legend">{legend}</ul></figcaption></figure>'
    )
