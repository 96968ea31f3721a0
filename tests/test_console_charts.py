"""The console's SVG charts, as pure functions: no database, no server."""

from __future__ import annotations

import re
from datetime import date

from tollgate_server.console.charts import SERIES, days_between, stacked_by_day
from tollgate_server.services.console_stats import DayModel

DAYS = days_between(date(2026, 11, 1), date(2026, 11, 3))


def row(day: int, model: str, cost: int) -> DayModel:
    return DayModel(date(2026, 11, day), model, 1, 10, 20, cost)


def draw(rows: list[DayModel]) -> str:
    return stacked_by_day(title="Credits", rows=rows, days=DAYS, value=lambda r: r.cost, label=str)


def test_each_model_is_a_coloured_segment_with_its_amount_and_no_inline_style() -> None:
    svg = draw([row(1, "a", 30), row(1, "b", 10), row(3, "a", 5)])
    segments = re.findall(r'<rect class="series-(\d)"[^>]*><title>([^<]+)</title>', svg)
    assert segments == [
        ("0", "2026-11-01 a: 30"),
        ("1", "2026-11-01 b: 10"),
        ("0", "2026-11-03 a: 5"),
    ]
    assert "style=" not in svg
    assert 'aria-label="Credits: 45 in all over 3 days, most from a."' in svg


def test_models_past_the_palette_share_one_colour_as_other() -> None:
    models = [f"m{i}" for i in range(SERIES + 2)]
    svg = draw([row(2, m, 100 - i) for i, m in enumerate(models)])
    legend = re.findall(r'<li><span class="swatch series-(\d)"[^>]*></span>([^<]+)</li>', svg)
    assert len(legend) == SERIES
    assert legend[-1] == (str(SERIES - 1), "other models")
    assert {c for c in re.findall(r'<rect class="series-(\d)"', svg)} == {
        str(i) for i in range(SERIES)
    }


def test_a_model_name_is_escaped_in_the_chart() -> None:
    svg = draw([row(1, "<b>x</b>", 1)])
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg


def test_no_usage_draws_empty_days_and_says_so() -> None:
    svg = draw([])
    assert "<rect" not in svg
    assert "nothing yet" in svg
