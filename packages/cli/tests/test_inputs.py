"""What the operator types, checked before anything touches the database."""

from __future__ import annotations

import uuid

import pytest
from tollgate_cli.errors import CliError
from tollgate_cli.inputs import negated, parse_id, positive_amount, validated
from tollgate_server.schemas import CreditsCreate


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", "100"), ("100.50", "100.5"), ("0.000001", "0.000001")],
)
def test_positive_amounts_are_normalised(text: str, expected: str) -> None:
    assert positive_amount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0000001", "more than 6 decimal places"),
        ("abc", "is not a decimal number"),
        ("NaN", "not a finite number"),
        ("0", "must be a positive number"),
        ("-5", "must be a positive number"),
        # Refused as the API refuses them (they were once accepted here).
        (" 2.5 ", "write it as a plain decimal"),
        ("1e3", "write it as a plain decimal"),
    ],
)
def test_bad_amounts_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(CliError, match=message) as caught:
        positive_amount(text)
    assert caught.value.message.startswith("AMOUNT")
    assert "\n" not in caught.value.message


def test_negated_flips_the_sign_exactly() -> None:
    assert negated("2.5") == "-2.5"
    assert negated("-0.000001") == "0.000001"


def test_ids_are_uuids() -> None:
    key = uuid.uuid4()
    assert parse_id(str(key)) == key
    with pytest.raises(CliError, match="'nope' is not an id"):
        parse_id("nope")


def test_validated_names_the_field() -> None:
    assert validated(CreditsCreate, amount="1", reason="x").amount == "1"
    with pytest.raises(CliError, match=r"^reason: "):
        validated(CreditsCreate, amount="1", reason="")
