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
    """A part of a message's content: text."""

    type: Literal["text"] = Field(description="`text`")
    text: str = Field(description="The text")


class ImageUrl(_Strict):
    """Where an image is: an https: URL (fetched by the gateway or the upstream) or inline."""

    url: str = Field(
        max_length=MAX_IMAGE_URL_CHARS, description="An https: URL or a data:image/... URL"
    )
    detail: Literal["auto", "low", "high"] | None = Field(
        None, description="The resolution the model sees it at (OpenAI's `detail`)"
    )

    @field_validator("url")
    @classmethod
    def _https_or_data(cls, value: str) -> str:
        lowered = value[:11].lower()
        if not (lowered.startswith("https://") or lowered.startswith("data:image/")):
            raise ValueError("an image URL must be an https: URL or a data:image/ URL")
        return value


class ImagePart(_Strict):
    """A part of a user message's content: an image."""

    type: Literal["image_url"] = Field(description="`image_url`")
    image_url: ImageUrl = Field(description="The image")


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    """The function an assistant called, and with what."""

    name: str = Field(min_length=1, max_length=64, description="The function's name")
    arguments: str = Field(max_length=1_000_000, description="JSON text")


class ToolCall(_Strict):
    """A tool call of an earlier assistant turn, sent back with the conversation."""

    id: str = Field(
        min_length=1, max_length=256, description="The call's id; its tool message names it"
    )
    type: Literal["function"] = Field(description="`function`")
    function: FunctionCall = Field(description="The function called")


class FunctionDefinition(_Strict):
    """A function the model may call."""

    name: str = Field(pattern=FUNCTION_NAME, description="1 to 64 letters, digits, _ or -")
    description: str | None = Field(
        None, max_length=100_000, description="What it does, for the model"
    )
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object")
    strict: StrictBool | None = Field(
        None, description="Whether the arguments must follow `parameters` exactly"
    )


class FunctionTool(_Strict):
    """A tool the model may use: a function."""

    type: Literal["function"] = Field(description="`function`")
    function: FunctionDefinition = Field(description="The function")


class NamedFunction(_Strict):
    """A function, by name."""

    name: str = Field(pattern=FUNCTION_NAME, description="The function's name")


class NamedToolChoice(_Strict):
    """A `tool_choice` that makes the model call this function."""

    type: Literal["function"] = Field(description="`function`")
    function: NamedFunction = Field(description="The function to call")


ToolChoiceParam = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(_Strict):
    """A `response_format`: plain text (the default)."""

    type: Literal["text"] = Field(description="`text`")


class JsonObjectFormat(_Strict):
    """A `response_format`: any JSON object."""

    type: Literal["json_object"] = Field(description="`json_object`")


class JsonSchema(_Strict):
    """The JSON Schema an answer must follow, with its name."""

    name: str = Field(pattern=FUNCTION_NAME, description="1 to 64 letters, digits, _ or -")
    description: str | None = Field(
        None, max_length=100_000, description="What the answer is, for the model"
    )
    # Named schema_ because BaseModel has a `schema` method; the JSON name is "schema".
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="A JSON Schema object")
    strict: StrictBool | None = Field(
        None, description="Whether the answer must follow the schema exactly"
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonSchemaFormat(_Strict):
    """A `response_format`: JSON that follows a schema."""

    type: Literal["json_schema"] = Field(description="`json_schema`")
    json_schema: JsonSchema = Field(description="The schema")


ResponseFormatParam = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]
