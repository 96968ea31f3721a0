"""`tollgate keys`: API keys for an account, created with their secret shown once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fields, note, table

if TYPE_CHECKING:
    from tollgate_cli.context import Db

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The account's email address.", show_default=False)]


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
    json_output: JsonFlag = False,
) -> None:
    """Create an API key for an account and print its secret, once: store it now.

    Example: tollgate keys create ada@example.com --name ci --model gpt-4o-mini
    """
    from tollgate_server.schemas import ApiKeyCreate
    from tollgate_server.services import accounts, keys

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(ApiKeyCreate, name=name, models=model or None, expires_at=expires_at)

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
            return await keys.list_keys(session=session, account_id=account.id)

    rows = run(operation)
    if json_output:
        echo_json(rows)
    elif rows:
        typer.echo(
            table(
                ["ID", "NAME", "PREFIX", "MODELS", "EXPIRES", "REVOKED", "LAST_USED", "CREATED"],
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
                    )
                    for k in rows
                ],
            )
        )
    else:
        note("this account has no keys")


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id, from `keys list`.")],
    json_output: JsonFlag = False,
) -> None:
    """Revoke a key: it stops working at once. Revoking it again changes nothing.

    Example: tollgate keys revoke 0f8fad5b-d9cb-469f-a165-70867728950e
    """
    from tollgate_server.errors import ApiError
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
    except ApiError as exc:
        if exc.code == "not_found":
            raise CliError(f"no key with id {parsed}") from None
        raise
    if json_output:
        echo_json(key)
    else:
        typer.echo(f"revoked key {key['id']} ({key['name']}) at {key['revoked_at'].isoformat()}")
