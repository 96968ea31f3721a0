"""The client's pages: overview, usage, generations, ledger, API keys.

Signing in is in `signin.py`, the playground in `playground.py`, the admin's pages in
`admin_pages.py`.

Routes stay thin: each reads through the same services as the API (`ledger`, `keys`,
`generations`) and the aggregates of `services.console_stats`, and renders.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from tollgate_core import format_credits

from tollgate_server.api.deps import RuntimeDep, SessionDep
from tollgate_server.console import render
from tollgate_server.console.charts import days_between, stacked_by_day
from tollgate_server.console.errors import shown_on_page
from tollgate_server.console.forms import read_form, validate
from tollgate_server.console.render import Html, esc, join, link, notice, page, table, when
from tollgate_server.console.session import ViewerDep
from tollgate_server.schemas import ApiKeyCreate
from tollgate_server.services import console_stats, generations, keys, ledger

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
CHART_DAYS = 30
DONE = {
    "key-revoked": "The key is revoked.",
    "granted": "The credits are posted.",
    "role": "The role is changed.",
    "disabled": "The account is disabled.",
    "enabled": "The account is enabled.",
    "model-added": "The model is added.",
    "model-saved": "The model is saved.",
}
"""Messages a redirect may name in ?done=: fixed texts, so a link cannot put words on a page."""


def done_notice(done: str | None) -> Html:
    return notice(DONE.get(done or ""))


# --- overview and usage ---------------------------------------------------------------------


def _credits(micro: int) -> str:
    return format_credits(micro)


@router.get("/")
async def overview(user: ViewerDep, session: SessionDep) -> Response:
    balance = await ledger.get_balance(session=session, account_id=user.account_id)
    since = console_stats.window_start(CHART_DAYS)
    month_start = console_stats.month_start()
    # One aggregate over whichever starts first, the chart's window or the month: the month's
    # spend is then a sum over at most 31 days x models rows.
    both = await console_stats.by_day_and_model(
        session=session, account_id=user.account_id, since=min(since, month_start)
    )
    rows = [r for r in both if r.day >= since.date()]
    month = sum(r.cost for r in both if r.day >= month_start.date())
    figures = (
        ("Balance", balance.balance, "balance"),
        ("Held", balance.held, "held"),
        ("Available", balance.available, "available"),
        ("Spent this month", month, "month"),
    )
    tiles = join(
        f'<div class="tile"><dt>{name}</dt><dd id="figure-{key}">{esc(_credits(value))}</dd></div>'
        for name, value, key in figures
    )
    chart = stacked_by_day(
        title=f"Credits per day, last {CHART_DAYS} days, by model",
        rows=rows,
        days=days_between(since.date(), datetime.now(UTC).date()),
        value=lambda r: r.cost,
        label=_credits,
    )
    body = f'<dl class="tiles">{tiles}</dl>{chart}'
    return page(title="Overview", body=body, user=user, active="overview")


async def _usage_rows(session: Any, account_id: uuid.UUID, days: int) -> Any:
    since = console_stats.window_start(days)
    rows = await console_stats.by_day_and_model(session=session, account_id=account_id, since=since)
    return since, rows


Days = Annotated[int, Query(ge=1, le=366)]


def usage_body(rows: list[console_stats.DayModel], since: datetime, days: int, export: str) -> Html:
    span = days_between(since.date(), datetime.now(UTC).date())
    cost_chart = stacked_by_day(
        title="Credits per day by model",
        rows=rows,
        days=span,
        value=lambda r: r.cost,
        label=_credits,
    )
    token_chart = stacked_by_day(
        title="Tokens (in and out) per day by model",
        rows=rows,
        days=span,
        value=lambda r: r.input_tokens + r.output_tokens,
        label=lambda n: f"{n:,}",
    )
    choices = join(
        f'<option value="{n}"{" selected" if n == days else ""}>{n} days</option>'
        for n in (7, 30, 90, 365)
    )
    picker = (
        '<form method="get" class="inline"><label for="days">Period</label>'
        f'<select id="days" name="days">{choices}</select>'
        '<button type="submit" class="secondary">Show</button>'
        f'<a class="button secondary" href="{esc(export)}?days={days}" download>'
        "Export CSV</a></form>"
    )
    listing = table(
        "Usage per day and model",
        ["Day", "Model", "Generations", "Tokens in", "Tokens out", "Credits"],
        (
            (
                r.day.isoformat(),
                r.model,
                r.generations,
                r.input_tokens,
                r.output_tokens,
                _credits(r.cost),
            )
            for r in reversed(rows)
        ),
    )
    return Html(f"{picker}{cost_chart}{token_chart}{listing}")


@router.get("/usage")
async def usage(user: ViewerDep, session: SessionDep, days: Days = CHART_DAYS) -> Response:
    since, rows = await _usage_rows(session, user.account_id, days)
    body = usage_body(rows, since, days, "/console/usage.csv")
    return page(title="Usage", body=body, user=user, active="usage")


def usage_csv(rows: list[console_stats.DayModel], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "model", "generations", "input_tokens", "output_tokens", "credits"])
    for r in rows:
        # A model name is admin-chosen text: keep a spreadsheet from reading it as a formula.
        name = "'" + r.model if r.model[:1] in ("=", "+", "-", "@") else r.model
        writer.writerow(
            [
                r.day.isoformat(),
                name,
                r.generations,
                r.input_tokens,
                r.output_tokens,
                _credits(r.cost),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            **render.SECURITY_HEADERS,
        },
    )


@router.get("/usage.csv")
async def usage_export(user: ViewerDep, session: SessionDep, days: Days = CHART_DAYS) -> Response:
    _, rows = await _usage_rows(session, user.account_id, days)
    return usage_csv(rows, f"tollgate-usage-{days}d.csv")


# --- generations and the ledger -------------------------------------------------------------


def _estimated(value: bool | None) -> str:
    return "" if value is None else ("estimated" if value else "reported")


@router.get("/generations")
async def generation_list(
    user: ViewerDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    with shown_on_page():
        data, next_cursor = await generations.list_generations(
            session=session, account_id=user.account_id, cursor=cursor, limit=PAGE_SIZE
        )
    rows = (
        (
            link(f"/console/generations/{g['id']}", g["created_at"].strftime("%Y-%m-%d %H:%M:%S")),
            g["model"],
            g["status"],
            g["input_tokens"] if g["input_tokens"] is not None else "",
            g["output_tokens"] if g["output_tokens"] is not None else "",
            g["cost"] if g["cost"] is not None else "running",
            _estimated(g["estimated"]),
            f"{g['first_token_ms']} ms" if g["first_token_ms"] is not None else "",
        )
        for g in data
    )
    listing = table(
        "Your generations, newest first",
        ["When (UTC)", "Model", "Status", "Tokens in", "Tokens out", "Credits", "Usage", "TTFT"],
        rows,
    )
    more = (
        # quote: the cursor holds a timestamp whose "+" a query string would read as a space.
        f'<p class="pager">{link(f"/console/generations?cursor={quote(next_cursor)}", "Older")}</p>'
        if next_cursor
        else ""
    )
    return page(title="Generations", body=listing + more, user=user, active="generations")


@router.get("/generations/{generation_id}")
async def generation_detail(
    generation_id: Annotated[uuid.UUID, Path()], user: ViewerDep, session: SessionDep
) -> Response:
    with shown_on_page():
        g = await generations.get_generation(
            session=session, generation_id=generation_id, account_id=user.account_id
        )
    fields = (
        ("Id", g["id"]),
        ("Model", g["model"]),
        ("Status", g["status"]),
        ("Streamed", "yes" if g["stream"] else "no"),
        ("Tokens in", g["input_tokens"]),
        ("Tokens out", g["output_tokens"]),
        ("Usage", _estimated(g["estimated"])),
        ("Held while running", g["hold"]),
        ("Credits charged", g["cost"] if g["cost"] is not None else "still running"),
        ("Error", g["error_code"]),
        ("Time to first token", f"{g['first_token_ms']} ms" if g["first_token_ms"] else None),
        ("Duration", f"{g['duration_ms']} ms" if g["duration_ms"] is not None else None),
        ("Started", when(g["created_at"])),
        ("Settled", when(g["settled_at"])),
    )
    items = join(f"<dt>{name}</dt><dd>{esc(value)}</dd>" for name, value in fields)
    body = f'<dl class="detail" id="generation">{items}</dl>' + link(
        "/console/generations", "All generations"
    )
    return page(title="Generation", body=body, user=user, active="generations")


LedgerCursor = Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")]


def ledger_table(entries: list[dict[str, Any]]) -> Html:
    return table(
        "Ledger entries, newest first",
        ["When (UTC)", "Kind", "Amount", "Held change", "Balance after", "Generation", "Reason"],
        (
            (
                when(e["created_at"]),
                e["kind"],
                e["amount"],
                e["held_delta"],
                e["balance_after"],
                str(e["generation_id"])[:8] if e["generation_id"] else "",
                e["reason"] or "",
            )
            for e in entries
        ),
    )


def pager(base: str, next_cursor: int | None) -> str:
    if next_cursor is None:
        return ""
    separator = "&" if "?" in base else "?"
    return f'<p class="pager">{link(f"{base}{separator}cursor={next_cursor}", "Older")}</p>'


@router.get("/ledger")
async def ledger_page(
    user: ViewerDep, session: SessionDep, cursor: LedgerCursor = None
) -> Response:
    entries, next_cursor = await ledger.list_entries(
        session=session,
        account_id=user.account_id,
        cursor=int(cursor) if cursor else None,
        limit=PAGE_SIZE,
    )
    body = ledger_table(entries) + pager("/console/ledger", next_cursor)
    return page(title="Ledger", body=body, user=user, active="ledger")


# --- API keys -------------------------------------------------------------------------------


def _limits(k: dict[str, Any]) -> str:
    """A key's limits in a few words, with its spend in the current period against its budget."""
    parts = []
    if k["spend_limit"] is not None:
        period = k["spend_period"] or "lifetime"
        parts.append(f"{k['spend']} of {k['spend_limit']} credits ({period})")
    if k["rpm"] is not None:
        parts.append(f"{k['rpm']} requests/min")
    if k["tpm"] is not None:
        parts.append(f"{k['tpm']} tokens/min")
    return "; ".join(parts) or "none"


def _keys_body(user: Any, rows: list[dict[str, Any]], spend: dict[uuid.UUID, int]) -> Html:
    def action(k: dict[str, Any]) -> Html:
        if k["revoked_at"] is not None:
            return Html("revoked")
        return Html(
            f'<form method="post" action="/console/keys/{esc(k["id"])}/revoke" class="inline">'
            f"{render.csrf_field(user)}"
            f'<button type="submit" class="danger" aria-label="Revoke {esc(k["name"])}">'
            "Revoke</button></form>"
        )

    listing = table(
        "Your API keys",
        ["Name", "Key", "Models", "Spent", "Limits", "Last used", "Created", ""],
        (
            (
                k["name"],
                f"{k['prefix']}…",
                ", ".join(k["models"]) if k["models"] else "all",
                _credits(spend.get(k["id"], 0)),
                _limits(k),
                when(k["last_used_at"]),
                when(k["created_at"]),
                action(k),
            )
            for k in rows
        ),
    )
    create = (
        '<form method="post" action="/console/keys" class="card">'
        f"<h2>New key</h2>{render.csrf_field(user)}"
        '<label for="key-name">Name</label>'
        '<input id="key-name" name="name" required maxlength="200">'
        '<label for="key-models">Models (comma-separated; empty for all)</label>'
        '<input id="key-models" name="models" maxlength="2000">'
        '<button type="submit">Create key</button></form>'
    )
    return Html(listing + create)


@router.get("/keys")
async def keys_page(
    user: ViewerDep, session: SessionDep, done: Annotated[str | None, Query()] = None
) -> Response:
    rows = await keys.list_keys(session=session, account_id=user.account_id)
    spend = await console_stats.spend_per_key(session=session, account_id=user.account_id)
    body = done_notice(done) + _keys_body(user, rows, spend)
    return page(title="API keys", body=body, user=user, active="keys")


@router.post("/keys")
async def create_key(
    request: Request, user: ViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await read_form(request)
    names = [m.strip() for m in form.get("models", "").split(",") if m.strip()]
    data = validate(ApiKeyCreate, {"name": form.get("name", ""), "models": names or None})
    with shown_on_page():  # too_many_api_keys, as the API answers it
        created = await keys.create_key(
            session=session,
            account_id=user.account_id,
            data=data,
            max_keys=runtime.settings.max_api_keys_per_account,
        )
    rows = await keys.list_keys(session=session, account_id=user.account_id)
    spend = await console_stats.spend_per_key(session=session, account_id=user.account_id)
    # The secret is shown on this one answer (no redirect), and never again.
    secret = (
        '<section class="card secret" aria-labelledby="secret-heading">'
        '<h2 id="secret-heading">Your new key</h2>'
        "<p>Copy it now: Tollgate keeps only its hash and cannot show it again.</p>"
        '<label for="new-key">Secret</label>'
        f'<input id="new-key" readonly value="{esc(created["key"])}">'
        '<button type="button" class="copy" data-copy="new-key">Copy</button>'
        '<p class="copied" role="status" aria-live="polite"></p></section>'
    )
    body = secret + _keys_body(user, rows, spend)
    return page(title="API keys", body=body, user=user, active="keys", status=201)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    key_id: Annotated[uuid.UUID, Path()],
    user: ViewerDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    with shown_on_page():
        await keys.revoke_key(session=session, key_id=key_id, account_id=user.account_id)
    runtime.keys.clear()
    return RedirectResponse("/console/keys?done=key-revoked", status_code=303)
