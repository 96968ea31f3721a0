"""The admin's pages: users (role, disable, credits, ledger), models and prices, all usage.

Each action calls the service the admin API calls (`accounts.update_account`,
`ledger.post_credits`, `models.create_model` / `update_model`), so the console and the API
cannot disagree. A credit grant carries an idempotency key drawn when the form was rendered:
submitting the same form twice (a double click, a reload) posts the credits once.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from tollgate_core import format_credits

from tollgate_server.api.deps import RuntimeDep, SessionDep
from tollgate_server.console.charts import days_between, stacked_by_day
from tollgate_server.console.errors import ConsoleError, shown_on_page
from tollgate_server.console.forms import checked, read_form, validate, whole_number
from tollgate_server.console.pages import (
    CHART_DAYS,
    PAGE_SIZE,
    LedgerCursor,
    done_notice,
    ledger_table,
    pager,
)
from tollgate_server.console.render import Html, csrf_field, esc, join, link, page, table
from tollgate_server.console.session import ConsoleAdminDep, ConsoleUser
from tollgate_server.schemas import (
    AccountUpdate,
    CreditsCreate,
    ModelCreate,
    ModelUpdate,
    Text,
)
from tollgate_server.services import accounts, console_stats, ledger, models

router = APIRouter(prefix="/console/admin", include_in_schema=False)

UserId = Annotated[uuid.UUID, Path()]
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What the form draws (`secrets.token_urlsafe(24)`): anything else was not sent by it."""


# --- users ----------------------------------------------------------------------------------


@router.get("/users")
async def users(
    admin: ConsoleAdminDep,
    session: SessionDep,
    # Text refuses NUL (PostgreSQL cannot store it): a 422, as on the API.
    q: Annotated[Text | None, Query(max_length=320)] = None,
    cursor: Annotated[Text | None, Query(max_length=400)] = None,
) -> Response:
    rows, next_cursor = await accounts.list_accounts(
        session=session, email=q or None, cursor=cursor, limit=PAGE_SIZE
    )
    search = (
        '<form method="get" class="inline" role="search">'
        '<label for="q">Email contains</label>'
        f'<input id="q" name="q" type="search" value="{esc(q or "")}">'
        '<button type="submit" class="secondary">Search</button></form>'
    )
    listing = table(
        "Accounts by email",
        ["Email", "Role", "State", "Balance", "Held"],
        (
            (
                link(f"/console/admin/users/{r.id}", r.email),
                r.role,
                "disabled" if r.disabled else "active",
                format_credits(r.balance),
                format_credits(r.held),
            )
            for r in rows
        ),
    )
    more = ""
    if next_cursor:
        query = f"q={quote(q)}&" if q else ""
        href = f"/console/admin/users?{query}cursor={quote(next_cursor)}"
        more = f'<p class="pager">{link(href, "More")}</p>'
    return page(title="Users", body=search + listing + more, user=admin, active="admin-users")


def _user_forms(admin: ConsoleUser, row: Any) -> Html:
    base = f"/console/admin/users/{row.id}"
    roles = join(
        f'<option value="{r}"{" selected" if r == row.role else ""}>{r}</option>'
        for r in ("client", "admin")
    )
    toggle = "enable" if row.disabled else "disable"
    return Html(
        '<div class="cards">'
        f'<form method="post" action="{base}/role" class="card">{csrf_field(admin)}'
        '<h2>Role</h2><label for="role">Role</label>'
        f'<select id="role" name="role">{roles}</select>'
        '<button type="submit">Save role</button></form>'
        f'<form method="post" action="{base}/{toggle}" class="card">{csrf_field(admin)}'
        f"<h2>Access</h2><p>The account is {'disabled' if row.disabled else 'active'}.</p>"
        f'<button type="submit" class="{"secondary" if row.disabled else "danger"}">'
        f"{toggle.capitalize()} account</button></form>"
        f'<form method="post" action="{base}/credits" class="card">{csrf_field(admin)}'
        f'<input type="hidden" name="idempotency_key" value="{secrets.token_urlsafe(24)}">'
        "<h2>Credits</h2>"
        '<label for="amount">Amount (negative to deduct)</label>'
        '<input id="amount" name="amount" required inputmode="decimal" '
        'pattern="-?[0-9]+(\\.[0-9]{1,6})?">'
        '<label for="reason">Reason</label>'
        '<input id="reason" name="reason" required maxlength="500">'
        '<button type="submit">Post credits</button></form></div>'
    )


@router.get("/users/{user_id}")
async def user_detail(
    user_id: UserId,
    admin: ConsoleAdminDep,
    session: SessionDep,
    cursor: LedgerCursor = None,
    done: Annotated[str | None, Query()] = None,
) -> Response:
    with shown_on_page():
        row = await accounts.get_account(session=session, account_id=user_id)
    entries, next_cursor = await ledger.list_entries(
        session=session,
        account_id=user_id,
        cursor=int(cursor) if cursor else None,
        limit=PAGE_SIZE,
    )
    figures = (
        ("Balance", format_credits(row.balance), "balance"),
        ("Held", format_credits(row.held), "held"),
        ("Available", format_credits(row.balance - row.held), "available"),
    )
    tiles = join(
        f'<div class="tile"><dt>{name}</dt><dd id="figure-{key}">{esc(value)}</dd></div>'
        for name, value, key in figures
    )
    body = (
        f"{done_notice(done)}<p>{esc(row.email)} · {esc(row.role)}"
        f"{' · disabled' if row.disabled else ''}</p>"
        f'<dl class="tiles">{tiles}</dl>{_user_forms(admin, row)}'
        f"<h2>Ledger</h2>{ledger_table(entries)}"
        f"{pager(f'/console/admin/users/{row.id}', next_cursor)}"
    )
    return page(title="Account", body=body, user=admin, active="admin-users")


async def _update(session: Any, admin: ConsoleUser, user_id: uuid.UUID, data: Any) -> None:
    with shown_on_page():
        await accounts.update_account(
            session=session, account_id=user_id, data=data, actor_id=admin.account_id
        )


@router.post("/users/{user_id}/role")
async def set_role(
    request: Request, user_id: UserId, admin: ConsoleAdminDep, session: SessionDep
) -> Response:
    form = await read_form(request)
    await _update(session, admin, user_id, validate(AccountUpdate, {"role": form.get("role")}))
    return RedirectResponse(f"/console/admin/users/{user_id}?done=role", status_code=303)


@router.post("/users/{user_id}/disable")
async def disable(user_id: UserId, admin: ConsoleAdminDep, session: SessionDep) -> Response:
    if user_id == admin.account_id:
        raise ConsoleError(409, "conflict", "You cannot disable your own account here.")
    await _update(session, admin, user_id, AccountUpdate(disabled=True))
    return RedirectResponse(f"/console/admin/users/{user_id}?done=disabled", status_code=303)


@router.post("/users/{user_id}/enable")
async def enable(user_id: UserId, admin: ConsoleAdminDep, session: SessionDep) -> Response:
    await _update(session, admin, user_id, AccountUpdate(disabled=False))
    return RedirectResponse(f"/console/admin/users/{user_id}?done=enabled", status_code=303)


@router.post("/users/{user_id}/credits")
async def post_credits(
    request: Request, user_id: UserId, admin: ConsoleAdminDep, session: SessionDep
) -> Response:
    form = await read_form(request)
    key = form.get("idempotency_key", "")
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ConsoleError(422, "validation_error", "This form has no idempotency key; reload.")
    data = validate(
        CreditsCreate, {"amount": form.get("amount", "").strip(), "reason": form.get("reason")}
    )
    with shown_on_page():
        await ledger.post_credits(
            session=session,
            account_id=user_id,
            amount=data.amount,
            reason=data.reason,
            actor_id=admin.account_id,
            # Namespaced, so a console form's key can never collide with an API caller's.
            idempotency_key=f"console:{key}",
        )
    return RedirectResponse(f"/console/admin/users/{user_id}?done=granted", status_code=303)


# --- models and prices ----------------------------------------------------------------------


def _model_form(admin: ConsoleUser, m: dict[str, Any] | None) -> Html:
    new = m is None
    values = m or {}
    prefix = "new" if new else f"m-{values['name']}"
    action = "/console/admin/models" if new else f"/console/admin/models/{values['name']}"

    def field(name: str, label: str, kind: str = "text", required: bool = True) -> str:
        value = values.get(name)
        return (
            f'<label for="{esc(prefix)}-{name}">{label}</label>'
            f'<input id="{esc(prefix)}-{name}" name="{name}" type="{kind}" '
            f'value="{esc(value if value is not None else "")}"{" required" if required else ""}>'
        )

    def box(name: str, label: str) -> str:
        on = values.get(name, name == "enabled")
        return (
            f'<div class="check"><input id="{esc(prefix)}-{name}" name="{name}" type="checkbox"'
            f'{" checked" if on else ""}><label for="{esc(prefix)}-{name}">{label}</label></div>'
        )

    name_field = field("name", "Name") if new else ""
    title = "Add a model" if new else esc(values["name"])
    return Html(
        f'<form method="post" action="{esc(action)}" class="card model">{csrf_field(admin)}'
        f"<h2>{title}</h2>{name_field}"
        f"{field('provider', 'Provider')}{field('upstream_model', 'Upstream model')}"
        f"{field('input_price', 'Input price (credits per million tokens)')}"
        f"{field('output_price', 'Output price (credits per million tokens)')}"
        f"{field('context_window', 'Context window', 'number')}"
        f"{field('max_output_tokens', 'Max output tokens', 'number')}"
        f"{field('default_max_tokens', 'Default max tokens', 'number', required=False)}"
        f"{box('enabled', 'Enabled')}{box('free', 'Free (may have a zero price)')}"
        f'<button type="submit">{"Add model" if new else "Save"}</button></form>'
    )


@router.get("/models")
async def models_page(
    admin: ConsoleAdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
    done: Annotated[str | None, Query()] = None,
) -> Response:
    catalogue = [
        models.model_public(m, configured=runtime.router.serves(m))
        for m in await models.list_models(session=session)
    ]
    listing = table(
        "Models",
        ["Name", "Provider", "Enabled", "Available", "Input price", "Output price"],
        (
            (
                m["name"],
                m["provider"],
                "yes" if m["enabled"] else "no",
                "yes" if m["available"] else "no",
                m["input_price"],
                m["output_price"],
            )
            for m in catalogue
        ),
    )
    forms = join(_model_form(admin, m) for m in catalogue)
    body = f'{done_notice(done)}{listing}<div class="cards">{_model_form(admin, None)}{forms}</div>'
    return page(title="Models and prices", body=body, user=admin, active="admin-models")


def _model_data(form: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": form.get("provider", "").strip(),
        "upstream_model": form.get("upstream_model", "").strip(),
        "input_price": form.get("input_price", "").strip(),
        "output_price": form.get("output_price", "").strip(),
        "enabled": checked(form, "enabled"),
        "free": checked(form, "free"),
    }
    for name in ("context_window", "max_output_tokens", "default_max_tokens"):
        data[name] = whole_number(form, name)
    return data


@router.post("/models")
async def add_model(
    request: Request, admin: ConsoleAdminDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await read_form(request)
    data = validate(ModelCreate, {"name": form.get("name", "").strip(), **_model_data(form)})
    with shown_on_page():
        await models.create_model(session=session, data=data, actor_id=admin.account_id)
    runtime.catalogue.invalidate()
    return RedirectResponse("/console/admin/models?done=model-added", status_code=303)


@router.post("/models/{name}")
async def edit_model(
    request: Request,
    name: Annotated[str, Path(max_length=200)],
    admin: ConsoleAdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await read_form(request)
    with shown_on_page():
        current = models.model_public(
            await models.get_model(session=session, name=name), configured=True
        )
    data = _model_data(form)
    # An unchanged price is left out: a new price row only when the admin changed it.
    for price in ("input_price", "output_price"):
        if data[price] == current[price]:
            data[price] = None
    if data["input_price"] is None and data["output_price"] is not None:
        data["input_price"] = current["input_price"]
    if data["output_price"] is None and data["input_price"] is not None:
        data["output_price"] = current["output_price"]
    update = validate(ModelUpdate, data)
    with shown_on_page():
        await models.update_model(
            session=session, name=name, data=update, actor_id=admin.account_id
        )
    runtime.catalogue.invalidate()
    return RedirectResponse("/console/admin/models?done=model-saved", status_code=303)


# --- usage across every account -------------------------------------------------------------


@router.get("/usage")
async def all_usage(admin: ConsoleAdminDep, session: SessionDep) -> Response:
    since = console_stats.window_start(CHART_DAYS)
    usage = await console_stats.overall(session=session, since=since)
    rows, top = usage.by_day_and_model, usage.top_spenders
    chart = stacked_by_day(
        title=f"Credits per day by model, every account, last {CHART_DAYS} days",
        rows=rows,
        days=days_between(since.date(), datetime.now(UTC).date()),
        value=lambda r: r.cost,
        label=format_credits,
    )
    spenders = table(
        f"Top spenders, last {CHART_DAYS} days",
        ["Account", "Generations", "Credits"],
        (
            (
                link(f"/console/admin/users/{t['id']}", t["email"]),
                t["generations"],
                format_credits(t["cost"]),
            )
            for t in top
        ),
    )
    per_model: dict[str, list[int]] = {}
    for r in rows:
        totals = per_model.setdefault(r.model, [0, 0, 0, 0])
        totals[0] += r.generations
        totals[1] += r.input_tokens
        totals[2] += r.output_tokens
        totals[3] += r.cost
    models_table = table(
        f"Per model, last {CHART_DAYS} days",
        ["Model", "Generations", "Tokens in", "Tokens out", "Credits"],
        (
            (name, t[0], t[1], t[2], format_credits(t[3]))
            for name, t in sorted(per_model.items(), key=lambda item: -item[1][3])
        ),
    )
    body = f"{chart}{spenders}{models_table}"
    return page(title="All usage", body=body, user=admin, active="admin-usage")
