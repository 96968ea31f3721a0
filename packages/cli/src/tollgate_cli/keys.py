"""`tollgate keys`: API keys for an account, created with their secret shown once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fields, note, table

if TYPE_CHECKING:
    from tollgate_cli.context import Db

app = typer.Typer(help="API keys: create, list, limit, revoke.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The account's email address.", show_default=False)]
SpendLimitOption = Annotated[
    str | None,
    typer.Option(
        "--spend-limit",
        help="Credits the key may spend per period (its holds count until they settle); "
        "'none' for no limit.",
        show_default=False,
    ),
]
SpendPeriodOption = Annotated[
    str | None,
    typer.Option(
        "--spend-period",
        help="day, week or month (calendar periods in UTC), or 'lifetime'.",
        show_default=False,
    ),
]
RpmOption = Annotated[
    str | None,
    typer.Option("--rpm", help="Requests per minute; 'none' for no limit.", show_default=False),
]
TpmOption = Annotated[
    str | None,
    typer.Option(
        "--tpm",
        help="Tokens per minute (prompt estimate + max_tokens); 'none' for no limit.",
        show_default=False,
    ),
]


def _limits(
    spend_limit: str | None, spend_period: str | None, rpm: str | None, tpm: str | None
) -> dict[str, Any]:
    """The options given, as the API's fields: 'none' (or 'lifetime') is null."""
    from tollgate_cli.errors import CliError

    def count(name: str, value: str) -> int | None:
        if value == "none":
            return None
        if not value.isdigit():
            raise CliError(f"--{name}: a whole number, or 'none'")
        return int(value)

    limits: dict[str, Any] = {}
    if spend_limit is not None:
        limits["spend_limit"] = None if spend_limit == "none" else spend_limit
    if spend_period is not None:
        limits["spend_period"] = None if spend_period == "lifetime" else spend_period
    if rpm is not None:
        limits["rpm"] = count("rpm", rpm)
    if tpm is not None:
        limits["tpm"] = count("tpm", tpm)
    return limits


def _limits_text(key: dict[str, Any]) -> str:
    budget = (
        f"{key['spend_limit']} credits per {key['spend_period'] or 'lifetime'}"
        if key["spend_limit"] is not None
        else "none"
    )
    return f"spend {key['spend']}, limit {budget}, rpm {key['rpm'] or '-'}, tpm {key['tpm'] or '-'}"


@app.command("create")
def create(
    email: Email,
    name: Annotated[str, typer.Option("--name", help="What the key is for.", show_default=False)],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A model the key may use; repeat for several. Default: every model.",
            show_default=False,
        ),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at",
            help="When the key stops working, ISO 8601 with a time zone "
            "(2030-01-01T00:00:00Z). Default: never.",
            show_default=False,
        ),
    ] = None,
    spend_limit: SpendLimitOption = None,
    spend_period: SpendPeriodOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Create an API key for an account and print its secret, once: store it now.

    Example: tollgate keys create ada@example.com --name ci --model gpt-4o-mini
    --spend-limit 25 --spend-period month --rpm 60
    """
    from tollgate_server.schemas import ApiKeyCreate
    from tollgate_server.services import accounts, keys

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(
        ApiKeyCreate,
        name=name,
        models=model or None,
        expires_at=expires_at,
        **_limits(spend_limit, spend_period, rpm, tpm),
    )

    async def operation(db: Db) -> tuple[Any, dict[str, Any]]:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            key = await keys.create_key(
                session=session,
                account_id=account.id,
                data=data,
                max_keys=db.settings.max_api_keys_per_account,
            )
            return account, key

    account, key = run(operation)
    if json_output:
        echo_json(key)
        return
    typer.echo(
        fields(
            [
                ("account", account.email),
                ("id", key["id"]),
                ("name", key["name"]),
                ("models", key["models"] or "every model"),
                ("expires", key["expires_at"] or "never"),
                ("limits", _limits_text(key)),
                ("key", key["key"]),
            ]
        )
    )
    note("This is the only time the key is shown: store it now.")


@app.command("list")
def list_keys(email: Email, json_output: JsonFlag = False) -> None:
    """List an account's keys, newest first (never their secrets).

    Example: tollgate keys list ada@example.com
    """
    from tollgate_server.services import accounts, keys

    from tollgate_cli.context import run

    async def operation(db: Db) -> list[dict[str, Any]]:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            return await keys.list_keys(
                session=session,
                account_id=account.id,
                clock_offset=db.settings.period_clock_offset_seconds,
            )

    rows = run(operation)
    if json_output:
        echo_json(rows)
    elif rows:
        typer.echo(
            table(
                [
                    "ID",
                    "NAME",
                    "PREFIX",
                    "MODELS",
                    "EXPIRES",
                    "REVOKED",
                    "LAST_USED",
                    "CREATED",
                    "SPEND",
                    "LIMIT",
                    "PERIOD",
                    "RPM",
                    "TPM",
                ],
                [
                    (
                        k["id"],
                        k["name"],
                        k["prefix"],
                        k["models"],
                        k["expires_at"],
                        k["revoked_at"],
                        k["last_used_at"],
                        k["created_at"],
                        k["spend"],
                        k["spend_limit"],
                        k["spend_period"] or ("lifetime" if k["spend_limit"] else None),
                        k["rpm"],
                        k["tpm"],
                    )
                    for k in rows
                ],
            )
        )
    else:
        note("this account has no keys")


@app.command("limit")
def limit(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id, from `keys list`.")],
    spend_limit: SpendLimitOption = None,
    spend_period: SpendPeriodOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a key's limits (as `PATCH /v1/admin/keys/{id}`): only the options given change.

    Example: tollgate keys limit 0f8fad5b-d9cb-469f-a165-70867728950e --spend-limit 25
    --spend-period month --rpm none
    """
    from tollgate_server.errors import NotFound
    from tollgate_server.schemas import ApiKeyUpdate
    from tollgate_server.services import keys

    from tollgate_cli.context import run
    from tollgate_cli.errors import CliError
    from tollgate_cli.inputs import parse_id, validated

    parsed = parse_id(key_id)
    limits = _limits(spend_limit, spend_period, rpm, tpm)
    if not limits:
        raise CliError("give at least one of --spend-limit, --spend-period, --rpm, --tpm")
    data = validated(ApiKeyUpdate, **limits)

    async def operation(db: Db) -> dict[str, Any]:
        async with db.session() as session:
            return await keys.update_key(
                session=session,
                key_id=parsed,
                account_id=None,
                data=data,
                clock_offset=db.settings.period_clock_offset_seconds,
            )

    try:
        key = run(operation)
    except NotFound:
        raise CliError(f"no key with id {parsed}") from None
    if json_output:
        echo_json(key)
    else:
        typer.echo(f"key {key['id']} ({key['name']}): {_limits_text(key)}")


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id, from `keys list`.")],
    json_output: JsonFlag = False,
) -> None:
    """Revoke a key: it stops working at once. Revoking it again changes nothing.

    Example: tollgate keys revoke 0f8fad5b-d9cb-469f-a165-70867728950e
    """
    from tollgate_server.errors import NotFound
    from tollgate_server.services import keys

    from tollgate_cli.context import run
    from tollgate_cli.errors import CliError
    from tollgate_cli.inputs import parse_id

    parsed = parse_id(key_id)

    async def operation(db: Db) -> dict[str, Any]:
        async with db.session() as session:
            return await keys.revoke_key(session=session, key_id=parsed, account_id=None)

    try:
        key = run(operation)
    except NotFound:
        raise CliError(f"no key with id {parsed}") from None
    if json_output:
        echo_json(key)
    else:
        typer.echo(f"revoked key {key['id']} ({key['name']}) at {key['revoked_at'].isoformat()}")
