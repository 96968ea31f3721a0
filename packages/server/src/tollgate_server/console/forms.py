"""Reading the console's HTML forms into the API's own input schemas.

A form carries strings; the schemas (`CreditsCreate`, `ModelCreate`, ...) are strict about
types, so numbers and check boxes are converted here and the schema then applies the same rules
as on the API. A refusal becomes one readable line, never a traceback.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tollgate_server.console.errors import ConsoleError

Schema = TypeVar("Schema", bound=BaseModel)


async def read_form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def whole_number(form: dict[str, str], name: str) -> int | None:
    value = form.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise ConsoleError(422, "validation_error", f"{name.replace('_', ' ')}: a whole number")
    return int(value)


def checked(form: dict[str, str], name: str) -> bool:
    return form.get(name) == "on"


def validate(schema: type[Schema], data: dict[str, Any]) -> Schema:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ConsoleError(
            422, "validation_error", f"{where.replace('_', ' ')}: {message}"
        ) from None
