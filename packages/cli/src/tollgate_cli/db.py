"""`tollgate db`: the schema's migrations and the ledger's invariants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from tollgate_cli.output import JsonFlag, echo_json, fail, fields, table

if TYPE_CHECKING:
    from tollgate_server.services.spool import SpoolSummary

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
    generations, answers delivered were charged, ...) and count the settlements spooled in the
    data directory. Exits with status 1 when a rule is broken.

    Example: tollgate db check
    """
    from tollgate_server.services import spool
    from tollgate_server.services.invariants import (
        find_answer_violations,
        find_violations,
        pending_generations,
        spooled_answers_released,
    )

    from tollgate_cli.context import run

    async def operation(db: Db) -> Report:
        spooled = spool.summarize(spool.spool_directory(db.settings.data_dir))
        async with db.engine.connect() as conn:
            return Report(
                violations={**await find_violations(conn), **await find_answer_violations(conn)},
                pending=await pending_generations(conn),
                spooled=spooled,
                released=await spooled_answers_released(conn, spooled.generation_ids),
                directory=str(spool.spool_directory(db.settings.data_dir)),
            )

    report = run(operation)
    violations = report.violations
    if json_output:
        echo_json(
            {
                "ok": not violations,
                "violations": {
                    rule: [list(row) for row in rows] for rule, rows in violations.items()
                },
                "pending_generations": report.pending,
                "spooled_settlements": {
                    "directory": report.directory,
                    "files": report.spooled.files,
                    "settlements": report.spooled.settlements,
                    "released_awaiting_late_charge": [str(g) for g in report.released],
                },
            }
        )
    else:
        typer.echo(_describe(report))
    if violations:
        fail(f"{len(violations)} ledger rule(s) broken")


@dataclass(frozen=True)
class Report:
    violations: dict[str, list[tuple[object, ...]]]
    pending: int
    spooled: SpoolSummary
    released: list[uuid.UUID]
    directory: str


def _describe(report: Report) -> str:
    from tollgate_server.services.invariants import ANSWER_CHECKS, CHECKS

    lines: list[str] = []
    for rule in [*CHECKS, *ANSWER_CHECKS]:
        rows: list[Any] = report.violations.get(rule, [])
        lines.append(f"{'BROKEN' if rows else 'ok':<6}  {rule}")
        lines.extend(f"          {', '.join(str(v) for v in row)}" for row in rows)
    lines.append(f"generations running or awaiting settlement: {report.pending}")
    lines.append(
        f"settlements spooled in {report.directory}: {report.spooled.settlements} "
        f"in {report.spooled.files} file(s) (settled by the next start on this data directory)"
    )
    if report.released:
        lines.append(
            f"answers delivered whose hold was released uncharged, to be charged late by the "
            f"next start: {len(report.released)}"
        )
        lines.extend(f"          {g}" for g in report.released)
    return "\n".join(lines)
