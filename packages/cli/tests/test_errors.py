"""Every failure is one line on stderr and exit status 1; usage errors stay Typer's."""

from __future__ import annotations

import pytest
import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from tollgate_cli.errors import CliError, CliGroup, describe
from tollgate_core import AmountError, ConfigurationError, parse_credits
from tollgate_server.errors import Conflict, NotFound
from tollgate_server.schemas import ModelCreate
from typer.testing import CliRunner


def _validation_error() -> ValidationError:
    try:
        ModelCreate.model_validate({"name": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def _amount_error() -> AmountError:
    try:
        parse_credits("1.0000001")
    except AmountError as exc:
        return exc
    raise AssertionError("expected an amount error")


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (CliError("give --name"), "give --name"),
        (NotFound("not_found", "no account with email a@b.c"), "no account with email a@b.c"),
        (ConfigurationError("TOLLGATE_X: bad"), "TOLLGATE_X: bad"),
        (_amount_error(), "1.0000001 has more than 6 decimal places"),
        (_validation_error(), "provider: Field required (and 3 more)"),
        (
            OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
            "cannot reach the database",
        ),
        (RuntimeError("boom\nmore"), "unexpected RuntimeError: boom"),
    ],
)
def test_describe_gives_one_line(exc: Exception, line: str) -> None:
    text = describe(exc)
    assert line in text
    assert "\n" not in text


app = typer.Typer(cls=CliGroup, pretty_exceptions_enable=False)


@app.command()
def explode(kind: str) -> None:
    if kind == "api":
        raise Conflict("email_taken", "an account with this email exists")
    if kind == "bug":
        raise KeyError("surprise")
    typer.echo("fine")


@app.command()
def other() -> None:
    pass


def test_the_root_group_turns_failures_into_one_line() -> None:
    result = CliRunner().invoke(app, ["explode", "api"])
    assert result.exit_code == 1
    assert result.stderr == "error: an account with this email exists\n"
    assert result.stdout == ""


def test_even_a_bug_is_one_line() -> None:
    result = CliRunner().invoke(app, ["explode", "bug"])
    assert result.exit_code == 1
    assert result.stderr == "error: unexpected KeyError: 'surprise'\n"


def test_usage_errors_stay_typers() -> None:
    result = CliRunner().invoke(app, ["explode"])
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr
