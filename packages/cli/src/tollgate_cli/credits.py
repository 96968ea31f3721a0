"""`tollgate credits`: balances, grants and deductions, and the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fields, note, table

if TYPE_CHECKING:
    from tollgate_cli.context import Db

app = typer.Typer(help="Credits: balances, grants, deductions, the ledger.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The account's email address.", show_default=False)]
# Negative amounts are refused with a clear message, not taken for an unknown option: hence
# `ignore_unknown_options` on the commands that take an AMOUNT.
Amount = Annotated[
    str,
    typer.Argument(help="Credits, a positive decimal such as 100 or 2.5.", show_default=False),
]
Reason = Annotated[
    str, typer.Option("--reason", help="Why: kept on the ledger entry.", show_default=False)
]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Any unique string: a repeat with the same key and request changes nothing.",
    ),
]
AMOUNT_COMMAND = {"ignore_unknown_options": True}


@app.command("show")
def show(email: Email, json_output: JsonFlag = False) -> None:
    """Show an account's balance, the credits held by running generations, and what is left.

    Example: tollgate credits show ada@example.com
    """
    from tollgate_server.services import accounts, ledger

    from tollgate_cli.context import run

    async def operation(db: Db) -> tuple[Any, Any]:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            return account, await ledger.get_balance(session=session, account_id=account.id)

    account, balance = run(operation)
    if json_output:
        echo_json({"email": account.email, **balance.public()})
    else:
        typer.echo(fields([("email", account.email), *balance.public().items()]))


def post(
    email: str,
    amount: str,
    reason: str,
    idempotency_key: str | None,
    *,
    sign: int,
    json_output: bool,
) -> None:
    """Grant (sign 1) or deduct (sign -1) through `ledger.post_credits`, and say what happened."""
    from tollgate_server.schemas import CreditsCreate
    from tollgate_server.services import accounts, ledger

    from tollgate_cli.context import run
    from tollgate_cli.errors import CliError
    from tollgate_cli.inputs import negated, positive_amount, validated

    amount = positive_amount(amount)
    signed = amount if sign > 0 else negated(amount)
    data = validated(CreditsCreate, amount=signed, reason=reason)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise CliError("--idempotency-key must be 1 to 200 characters")

    async def operation(db: Db) -> tuple[Any, dict[str, Any], Any, bool]:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            entry, balance, replayed = await ledger.post_credits(
                session=session,
                account_id=account.id,
                amount=data.amount,
                reason=data.reason,
                actor_id=None,
                idempotency_key=idempotency_key,
            )
            return account, entry, balance, replayed

    account, entry, balance, replayed = run(operation)
    if json_output:
        echo_json({"entry": entry, "balance": balance.public(), "replayed": replayed})
        return
    verb = "granted" if sign > 0 else "deducted"
    direction = "to" if sign > 0 else "from"
    prefix = "replayed, nothing changed: " if replayed else ""
    typer.echo(
        f"{prefix}{verb} {amount} credits {direction} {account.email} (entry {entry['id']}); "
        f"balance {balance.public()['balance']}, available {balance.public()['available']}"
    )


@app.command("grant", context_settings=AMOUNT_COMMAND)
def grant(
    email: Email,
    amount: Amount,
    reason: Reason,
    idempotency_key: IdempotencyKey = None,
    json_output: JsonFlag = False,
) -> None:
    """Add credits to an account, as one ledger entry.

    Example: tollgate credits grant ada@example.com 100 --reason 'top-up'
    """
    post(email, amount, reason, idempotency_key, sign=1, json_output=json_output)


@app.command("deduct", context_settings=AMOUNT_COMMAND)
def deduct(
    email: Email,
    amount: Amount,
    reason: Reason,
    idempotency_key: IdempotencyKey = None,
    json_output: JsonFlag = False,
) -> None:
    """Take credits from an account (never below what is available), as one ledger entry.

    Example: tollgate credits deduct ada@example.com 2.5 --reason 'refund reversed'
    """
    post(email, amount, reason, idempotency_key, sign=-1, json_output=json_output)


@app.command("ledger")
def ledger_entries(
    email: Email,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """List an account's ledger entries, newest first.

    Example: tollgate credits ledger ada@example.com --limit 20
    """
    from tollgate_server.services import accounts, ledger

    from tollgate_cli.context import run

    async def operation(db: Db) -> tuple[list[dict[str, Any]], int | None]:
        async with db.session() as session:
            account = await accounts.find_account_by_email(session=session, email=email)
            return await ledger.list_entries(
                session=session, account_id=account.id, cursor=None, limit=limit
            )

    entries, more = run(operation)
    if json_output:
        echo_json(entries)
    elif entries:
        typer.echo(
            table(
                ["ID", "TIME", "KIND", "AMOUNT", "HELD", "BALANCE", "REASON"],
                [
                    (
                        e["id"],
                        e["created_at"],
                        e["kind"],
                        e["amount"],
                        e["held_delta"],
                        e["balance_after"],
                        e["reason"],
                    )
                    for e in entries
                ],
            )
        )
    else:
        note("no ledger entries")
    if more:
        note(f"older entries exist: raise --limit (now {limit})")
