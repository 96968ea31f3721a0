"""`tollgate db`: the schema's migrations and the ledger's invariants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fail, fields, table

if TYPE_CHECKING:
    from tollgate_cli.context import Db

app = typer.Typer(help="The database: migrations and consistency checks.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Bring the schema to the newest migration (creating the embedded database, when no
    TOLLGATE_DATABASE_URL is set and the data directory has none).

    Example: TOLLGATE_DATABASE_URL=postgresql+asyncpg://u@host/db tollgate db upgrade
    """
    from tollgate_server.settings import load_settings

    from tollgate_cli.context import database
    from tollgate_cli.serve import migrate

    with database(load_settings(), create=True) as url:
        migrate(url)
    typer.echo("schema is at the newest migration")


@app.command("current")
def current(json_output: JsonFlag = False) -> None:
    """Show the database's migration next to the newest one this Tollgate knows (changes
    nothing).

    Example: tollgate db current
    """

    from tollgate_server.settings import load_settings

    from tollgate_cli.context import database
    from tollgate_cli.serve import check_database

    with database(load_settings()) as url:
        state = check_database(url)
    if json_output:
        echo_json({"current": state.current, "head": state.head, "at_head": state.at_head})
        return
    status = "up to date" if state.at_head else "behind: run `tollgate db upgrade`"
    if state.current is None:
        status = "empty: run `tollgate db upgrade`"
    typer.echo(fields([("current", state.current), ("head", state.head), ("status", status)]))


@app.command("history")
def history(json_output: JsonFlag = False) -> None:
    """List the migrations this Tollgate ships, newest first (needs no database).

    Example: tollgate db history
    """
    from alembic.script import ScriptDirectory
    from tollgate_server.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused/"))
    revisions: list[dict[str, Any]] = [
        {
            "revision": r.revision,
            "down_revision": r.down_revision,
            "message": r.doc,
            "head": r.is_head,
        }
        for r in script.walk_revisions()
    ]
    if json_output:
        echo_json(revisions)
        return
    typer.echo(
        table(
            ["REVISION", "AFTER", "MESSAGE"],
            [
                (
                    f"{r['revision']} (head)" if r["head"] else r["revision"],
                    r["down_revision"],
                    r["message"],
                )
                for r in revisions
            ],
        )
    )


@app.command("check")
def check(json_output: JsonFlag = False) -> None:
    """Check the ledger's invariants (balances equal their entries, holds match running
    generations, ...). Exits with status 1 when a rule is broken.

    Example: tollgate db check
    """
    from tollgate_server.services.invariants import find_violations, pending_generations

    from tollgate_cli.context import run

    async def operation(db: Db) -> tuple[dict[str, list[tuple[object, ...]]], int]:
        async with db.engine.connect() as conn:
            return await find_violations(conn), await pending_generations(conn)

    violations, pending = run(operation)
    if json_output:
        echo_json(
            {
                "ok": not violations,
                "violations": {
                    rule: [list(row) for row in rows] for rule, rows in violations.items()
                },
                "pending_generations": pending,
            }
        )
    else:
        typer.echo(_describe(violations, pending))
    if violations:
        fail(f"{len(violations)} ledger rule(s) broken")


def _describe(violations: dict[str, list[tuple[object, ...]]], pending: int) -> str:
    from tollgate_server.services.invariants import CHECKS

    lines: list[str] = []
    for rule in CHECKS:
        rows: list[Any] = violations.get(rule, [])
        lines.append(f"{'BROKEN' if rows else 'ok':<6}  {rule}")
        lines.extend(f"          {', '.join(str(v) for v in row)}" for row in rows)
    lines.append(f"generations running or awaiting settlement: {pending}")
    return "\n".join(lines)
