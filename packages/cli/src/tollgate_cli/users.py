"""`tollgate users`: create accounts, look them up, change their role, disable them."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fields, note, table

if TYPE_CHECKING:
    from tollgate_cli.context import Db

app = typer.Typer(help="Accounts: create, list, show, change role, disable.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The account's email address.", show_default=False)]


class Role(StrEnum):
    admin = "admin"
    client = "client"


def account_json(row: Any) -> dict[str, Any]:
    """An account as the API shows it, plus what is held and available."""
    from tollgate_core import format_credits
    from tollgate_server.services.accounts import account_public

    return {
        **account_public(row),
        "held": format_credits(row.held),
        "available": format_credits(row.balance - row.held),
    }


def show_account(row: Any, json_output: bool) -> None:
    account = account_json(row)
    if json_output:
        echo_json(account)
        return
    typer.echo(
        fields(
            [
                ("email", account["email"]),
                ("id", account["id"]),
                ("role", account["role"]),
                ("disabled", account["disabled"]),
                ("balance", account["balance"]),
                ("held", account["held"]),
                ("available", account["available"]),
                ("created", account["created_at"]),
            ]
        )
    )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("create")
def create(
    email: Email,
    admin: Annotated[bool, typer.Option("--admin", help="Make the account an admin.")] = False,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Create an account (with the configured signup grant, if any).

    Without --password-stdin, asks for the password twice without echoing it.

    Example: tollgate users create ada@example.com --admin
    """
    from tollgate_server.schemas import AccountCreate
    from tollgate_server.services import accounts

    from tollgate_cli.context import run
    from tollgate_cli.inputs import validated

    data = validated(AccountCreate, email=email, password=_read_password(password_stdin))
    role = Role.admin if admin else Role.client

    async def operation(db: Db) -> Any:
        async with db.session() as session:
            return await accounts.create_account(
                session=session, data=data, settings=db.settings, role=role.value
            )

    row = run(operation)
    if json_output:
        echo_json(account_json(row))
    else:
        typer.echo(f"created {row.email} ({row.role}, id {row.id})")


@app.command("list")
def list_users(
    email: Annotated[
        str | None, typer.Option("--email", help="Only emails that contain this text.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    json_output: JsonFlag = False,
) -> None:
    """List accounts, ordered by email.

    Example: tollgate users list --email @example.com --limit 20
    """
    from tollgate_server.services import accounts

    from tollgate_cli.context import run

    async def operation(db: Db) -> tuple[list[Any], str | None]:
        async with db.session() as session:
            return await accounts.list_accounts(
                session=session, email=email, cursor=None, limit=limit
            )

    rows, more = run(operation)
    if json_output:
        echo_json([account_json(row) for row in rows])
    elif rows:
        accounts_shown = [account_json(row) for row in rows]
        typer.echo(
            table(
                ["EMAIL", "ROLE", "DISABLED", "BALANCE", "HELD", "CREATED", "ID"],
                [
                    (
                        a["email"],
                        a["role"],
                        a["disabled"],
                        a["balance"],
                        a["held"],
                        a["created_at"],
                        a["id"],
                    )
                    for a in accounts_shown
                ],
            )
        )
    else:
        note("no accounts match")
    if more:
        note(f"more accounts match: raise --limit (now {limit}) or narrow --email")


@app.command("show")
def show(email: Email, json_output: JsonFlag = False) -> None:
    """Show one account: role, state and credits.

    Example: tollgate users show ada@example.com
    """
    from tollgate_server.services import accounts

    from tollgate_cli.context import run

    async def operation(db: Db) -> Any:
        async with db.session() as session:
            return await accounts.find_account_by_email(session=session, email=email)

    show_account(run(operation), json_output)


def update(email: str, *, role: str | None = None, disabled: bool | None = None) -> Any:
    """Change an account through the same service as the API (audited, with no actor)."""
    from tollgate_server.schemas import AccountUpdate
    from tollgate_server.services import accounts

    from tollgate_cli.context import run

    data = AccountUpdate(role=role, disabled=disabled)

    async def operation(db: Db) -> Any:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            return await accounts.update_account(
                session=session, account_id=account.id, data=data, actor_id=None
            )

    return run(operation)


@app.command("set-role")
def set_role(
    email: Email,
    role: Annotated[Role, typer.Argument(help="admin or client.", show_default=False)],
    json_output: JsonFlag = False,
) -> None:
    """Make an account an admin or a client.

    Example: tollgate users set-role ada@example.com admin
    """
    row = update(email, role=role.value)
    if json_output:
        echo_json(account_json(row))
    else:
        typer.echo(f"{row.email} is now {row.role}")


@app.command("disable")
def disable(email: Email, json_output: JsonFlag = False) -> None:
    """Disable an account: it cannot log in or generate, and its refresh tokens are revoked.

    Example: tollgate users disable ada@example.com
    """
    row = update(email, disabled=True)
    if json_output:
        echo_json(account_json(row))
    else:
        typer.echo(f"{row.email} is disabled")


@app.command("enable")
def enable(email: Email, json_output: JsonFlag = False) -> None:
    """Enable a disabled account again.

    Example: tollgate users enable ada@example.com
    """
    row = update(email, disabled=False)
    if json_output:
        echo_json(account_json(row))
    else:
        typer.echo(f"{row.email} is enabled")
