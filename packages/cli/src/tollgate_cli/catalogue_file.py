"""Catalogue files for `tollgate models import`: reading them, and what an import would change.

A catalogue file is YAML, or JSON when its name ends in ``.json``: a list of objects with the
fields of `ModelCreate`. Importing is idempotent: a model that is missing is created, a model
that exists is updated only in the fields the file names and that differ, and a price is set
only when it differs from the current one, so importing the same file twice changes nothing the
second time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate_cli.errors import CliError

if TYPE_CHECKING:
    from tollgate_server.schemas import ModelCreate, ModelUpdate
    from tollgate_server.services.catalogue import CatalogueModel

# Fields compared one by one; prices are compared as a pair, in micro-credits.
PLAIN_FIELDS = (
    "provider",
    "kind",
    "upstream_model",
    "enabled",
    "free",
    "context_window",
    "max_output_tokens",
    "default_max_tokens",
)


def read_catalogue_file(path: Path) -> list[ModelCreate]:
    """Every entry of the file, validated; one bad entry refuses the whole file."""
    from pydantic import ValidationError
    from tollgate_server.schemas import ModelCreate

    from tollgate_cli.errors import validation_message

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    document = _parse(path, text)
    if not isinstance(document, list):
        raise CliError(f"{path}: expected a list of models, found {type(document).__name__}")
    models: list[ModelCreate] = []
    seen: set[str] = set()
    for index, entry in enumerate(document, start=1):
        label = _label(index, entry)
        if not isinstance(entry, dict):
            raise CliError(f"{path}: {label} is not an object with a model's fields")
        try:
            model = ModelCreate.model_validate(entry)
        except ValidationError as exc:
            raise CliError(f"{path}: {label}: {validation_message(exc)}") from None
        if model.name in seen:
            raise CliError(f"{path}: {label}: the model {model.name} appears twice")
        seen.add(model.name)
        models.append(model)
    return models


def _parse(path: Path, text: str) -> Any:
    """JSON for a ``.json`` file, YAML otherwise; decimals stay text either way."""
    import yaml

    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, parse_float=str)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CliError(f"{path}: not valid YAML{where}") from None


def _label(index: int, entry: object) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"entry {index} ({name})" if isinstance(name, str) else f"entry {index}"


def _loader() -> type[Any]:
    """A safe YAML loader that keeps decimals as the text written (``0.15`` stays "0.15").

    A float must never reach money: parsed as one, a price could change before it is checked.
    """
    import yaml

    class DecimalTextLoader(yaml.SafeLoader):
        pass

    def as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
        return str(loader.construct_scalar(node))

    DecimalTextLoader.add_constructor("tag:yaml.org,2002:float", as_text)
    return DecimalTextLoader


@dataclass(frozen=True, slots=True)
class Change:
    """What importing one entry does: create it, update some fields, or nothing."""

    name: str
    action: str
    """created, updated or unchanged."""
    fields: tuple[str, ...] = ()


def model_changes(current: CatalogueModel, wanted: ModelCreate) -> ModelUpdate | None:
    """The update that makes `current` match `wanted`, or None when nothing differs.

    Only the fields the file set are compared (so a file without `enabled` never re-enables a
    model an operator disabled); both prices are always compared, and set together.
    """
    from tollgate_core import parse_credits
    from tollgate_server.schemas import ModelUpdate

    given = wanted.model_fields_set
    changes: dict[str, Any] = {
        name: getattr(wanted, name)
        for name in PLAIN_FIELDS
        if name in given
        and getattr(wanted, name) is not None
        and getattr(wanted, name) != getattr(current, name)
    }
    price = current.price
    wanted_prices = (parse_credits(wanted.input_price), parse_credits(wanted.output_price))
    if price is None or wanted_prices != (price.input_per_million, price.output_per_million):
        changes["input_price"] = wanted.input_price
        changes["output_price"] = wanted.output_price
    return ModelUpdate(**changes) if changes else None
