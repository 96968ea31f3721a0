"""Tool calls between the OpenAI shape and the vendors': the helpers every translation shares."""

from __future__ import annotations

import orjson

from tollgate_core.errors import UpstreamBadRequest
from tollgate_core.types import ToolCall, ToolCallDelta


def tool_arguments(call: ToolCall) -> dict[str, object]:
    """The arguments of an earlier call as the object vendors other than OpenAI take.

    Raises:
        UpstreamBadRequest: the arguments are not a JSON object (the client sent them so).
    """
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamBadRequest(f"the arguments of tool call {call.id} are not a JSON object")
    return value


def join_tool_calls(deltas: list[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The whole tool calls that streamed `deltas` make, in the order of their index."""
    calls: dict[int, tuple[str, str, list[str]]] = {}
    for delta in deltas:
        call = calls.get(delta.index)
        if call is None:
            calls[delta.index] = (delta.id or "", delta.name or "", [delta.arguments])
        else:
            call[2].append(delta.arguments)
    return tuple(
        ToolCall(id=call_id, name=name, arguments="".join(arguments))
        for _, (call_id, name, arguments) in sorted(calls.items())
    )
