"""Catalogue files: reading them exactly, and what importing one would change."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tollgate_cli.catalogue_file import model_changes, read_catalogue_file
from tollgate_cli.errors import CliError
from tollgate_core import Price
from tollgate_server.schemas import ModelCreate
from tollgate_server.services.catalogue import CatalogueModel

YAML = """\
- name: small
  provider: openai
  upstream_model: gpt-small
  context_window: 128000
  max_output_tokens: 4096
  input_price: 0.15
  output_price: 0.6
- name: big
  provider: gemini
  upstream_model: gemini-big
  context_window: 1000000
  max_output_tokens: 65536
  input_price: 1.25
  output_price: 10
  enabled: false
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_decimals_are_read_as_the_text_written(tmp_path: Path) -> None:
    small, big = read_catalogue_file(_write(tmp_path, "c.yaml", YAML))
    assert (small.input_price, small.output_price) == ("0.15", "0.6")
    assert (big.input_price, big.output_price, big.enabled) == ("1.25", "10", False)


def test_json_files_are_read_as_json(tmp_path: Path) -> None:
    text = (
        '[{"name": "j", "provider": "openai", "upstream_model": "u", "context_window": 10,'
        ' "max_output_tokens": 5, "input_price": 0.1, "output_price": "0.2"}]'
    )
    (model,) = read_catalogue_file(_write(tmp_path, "c.json", text))
    assert (model.input_price, model.output_price) == ("0.1", "0.2")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "name: x\n", "expected a list of models, found dict"),
        ("c.yaml", "- [1, 2]\n", "entry 1 is not an object"),
        ("c.yaml", "- {name: x, provider: openai}\n", r"entry 1 \(x\): upstream_model: "),
        ("c.yaml", "- a: [\n", "not valid YAML at line"),
        ("c.json", "[{", "not valid JSON"),
        ("c.yaml", YAML + YAML, r"entry 3 \(small\): the model small appears twice"),
        ("c.yaml", YAML.replace("0.15", "0.0000001"), "more than 6 decimal places"),
    ],
)
def test_bad_files_are_refused_whole(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        read_catalogue_file(_write(tmp_path, name, text))


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="cannot read it"):
        read_catalogue_file(tmp_path / "missing.yaml")


def _current(**overrides: object) -> CatalogueModel:
    values: dict[str, object] = {
        "id": 1,
        "name": "small",
        "provider": "openai",
        "upstream_model": "gpt-small",
        "enabled": True,
        "free": False,
        "context_window": 128000,
        "max_output_tokens": 4096,
        "default_max_tokens": 1024,
        "created_at": datetime(2030, 1, 1, tzinfo=UTC),
        "price": Price(input_per_million=150_000, output_per_million=600_000, id=1),
        "price_effective_from": datetime(2030, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return CatalogueModel(**values)  # type: ignore[arg-type]


def _wanted(**overrides: object) -> ModelCreate:
    values: dict[str, object] = {
        "name": "small",
        "provider": "openai",
        "upstream_model": "gpt-small",
        "context_window": 128000,
        "max_output_tokens": 4096,
        "input_price": "0.150",
        "output_price": "0.6",
    }
    values.update(overrides)
    return ModelCreate.model_validate(values)


def test_a_model_that_matches_needs_no_change() -> None:
    assert model_changes(_current(), _wanted()) is None


def test_fields_the_file_does_not_name_are_left_alone() -> None:
    # The operator disabled the model; a file without `enabled` must not turn it back on.
    assert model_changes(_current(enabled=False), _wanted()) is None
    update = model_changes(_current(enabled=False), _wanted(enabled=True))
    assert update is not None and update.model_fields_set == {"enabled"}


def test_prices_change_together_and_only_when_they_differ() -> None:
    update = model_changes(_current(), _wanted(output_price="0.7"))
    assert update is not None
    assert (update.input_price, update.output_price) == ("0.150", "0.7")
    assert update.model_fields_set == {"input_price", "output_price"}


def test_an_unpriced_model_gets_the_files_prices() -> None:
    update = model_changes(_current(price=None), _wanted())
    assert update is not None and update.input_price == "0.150"


def test_changed_fields_are_listed() -> None:
    update = model_changes(_current(), _wanted(upstream_model="gpt-small-2", context_window=9))
    assert update is not None
    assert update.model_fields_set == {"upstream_model", "context_window"}
