"""Scenario directives: ``[[fake:key=value,flag]]`` in the last user message of a request."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

_DIRECTIVE = re.compile(r"\[\[fake:([^\]]*)\]\]")

FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls")


class DirectiveError(ValueError):
    """A directive the fake does not know, or a value of the wrong type; answered with a 400."""


@dataclass(slots=True)
class Directives:
    """What one request asked the fake upstream to do. Every field defaults to "behave well"."""

    status: int | None = None
    """Answer with this HTTP status and a vendor-format error body instead of generating."""
    retry_after: float | None = None
    flaky: float = 0.0
    """Answer 503 with this probability (0 to 1) instead of generating: an unreliable upstream."""
    """Send ``Retry-After: <seconds>`` with the error status."""
    chunks: int | None = None
    """Words to generate (before the cap at the request's max tokens); default 5."""
    pad: int = 0
    """Append this many ``x`` to every generated word: big deltas, to fill a socket quickly."""
    delay_ms: int = 0
    """Pause between two chunks."""
    stop_after: int | None = None
    """End the body cleanly after this many chunks, with no terminal event and no usage."""
    reset_after: int | None = None
    """Reset the TCP connection (RST) after this many chunks."""
    stall_after: int | None = None
    """After this many chunks, send nothing for `stall_s` seconds, then carry on."""
    stall_s: float = 30.0
    stall_first_s: float = 0.0
    """Wait this long before the first byte of the response (before the status line)."""
    no_usage: bool = False
    """Report no usage at all."""
    usage_output: int | None = None
    """Report this many output tokens, whatever the text (inclusive of reasoning)."""
    usage_input: str | None = None
    """Report this input count, whatever the prompt: an integer (``-1000000``) or a JSON number
    such as ``1e23``, sent as written, to play a broken or hostile upstream."""
    error_after: int | None = None
    """After this many chunks, send the vendor's mid-stream error event and end the body."""
    error_status: int = 500
    """The status the mid-stream error stands for (Anthropic: 529 is ``overloaded_error``)."""
    cached: int = 0
    """Input tokens to report as read from the prompt cache (inside the input count)."""
    cache_write: int = 0
    """Anthropic only: input tokens to report as written to the cache (inside the input count)."""
    reasoning: int = 0
    """Reasoning tokens to report, on top of one output token per chunk."""
    thinking: int = 0
    """Anthropic only: stream this many pieces of thinking (``think0 think1 ...``, a thinking
    block before the answer), each reported as one reasoning and output token."""
    leak: bool = False
    """With `status` or `error_after`: the error message also names what real upstreams have
    leaked: the key masked as OpenAI shows it (its first 8 and last 4 characters), an internal
    host and an organisation id."""
    finish: str = "stop"
    """The finish reason, in Tollgate's words; the fake sends the vendor's spelling of it."""
    tool: str | None = None
    """Call the request's function of this name (its arguments fit its parameters' schema),
    unless the conversation already ends with a tool result: then answer in text."""


_TYPES = {f.name: f.type for f in fields(Directives)}


def parse_directives(text: str) -> Directives:
    """Read every ``[[fake:...]]`` block in `text` (later blocks win) into `Directives`.

    Raises:
        DirectiveError: for an unknown name or a value of the wrong type, so that a typo in a
            test fails loudly instead of being ignored.
    """
    directives = Directives()
    for block in _DIRECTIVE.findall(text):
        for item in block.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, raw = item.partition("=")
            name = name.strip()
            kind = _TYPES.get(name)
            if kind is None:
                raise DirectiveError(f"unknown fake directive {name!r}")
            setattr(directives, name, _convert(name, str(kind), raw.strip() if sep else None))
    if directives.usage_input is not None:
        try:
            float(directives.usage_input)
        except ValueError:
            raise DirectiveError("usage_input must be a number") from None
    if directives.finish not in FINISH_REASONS:
        raise DirectiveError(f"finish must be one of {', '.join(FINISH_REASONS)}")
    return directives


def _convert(name: str, kind: str, raw: str | None) -> object:
    if kind == "bool":
        return raw is None or raw.lower() in ("1", "true", "yes")
    if raw is None:
        raise DirectiveError(f"fake directive {name!r} needs a value")
    try:
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
    except ValueError:
        raise DirectiveError(f"fake directive {name}={raw!r} is not a number") from None
    return raw
