"""The parts of OpenAI's chat completion request beyond plain text: message parts (images),
tool calls and tool results, tool definitions, the tool choice and the response format.

Validated strictly (unknown fields refused with 422); `ChatCompletionCreate` in
`tollgate_server.openai_format` is built from them. Whether a model's provider can carry a
parameter is decided later, in `tollgate_server.services.chat_request`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

MAX_IMAGE_URL_CHARS = 28_000_000
"""A ``data:`` URL of a 20 MiB image (its base64 text) and its header fit; the body limit of
the server applies first."""

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: str = Field(
        max_length=MAX_IMAGE_URL_CHARS, description="An https: URL or a data:image/... URL"
    )
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _https_or_data(cls, value: str) -> str:
        lowered = value[:11].lower()
        if not (lowered.startswith("https://") or lowered.startswith("data:image/")):
            raise ValueError("an image URL must be an https: URL or a data:image/ URL")
        return value


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=1_000_000, description="JSON text")


class ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"]
    function: FunctionCall


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object")
    strict: StrictBool | None = None


class FunctionTool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoiceParam = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchema(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=100_000)
    # Named schema_ because BaseModel has a `schema` method; the JSON name is "schema".
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormatParam = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]
