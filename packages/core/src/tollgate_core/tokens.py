"""Token estimates for when no upstream count exists.

Exact tokenizers need vocabulary files that cannot be fetched at run time, so Tollgate estimates:
one token per 3 UTF-8 bytes, rounded up, plus a few tokens of framing per message. Real BPE
tokenizers average about 4 bytes per token on English text, so the estimate errs high; that is the
safe side for holds and context checks. Estimated counts are always marked as estimated.
"""

from __future__ import annotations

from collections.abc import Iterable

from tollgate_core.types import Message

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators each chat message costs, as OpenAI's own guide counts them."""
REPLY_PRIMING_TOKENS = 3


def estimate_text_tokens(text: str) -> int:
    """Estimate the tokens of `text`: ceil(bytes / 3), at least 1 for non-empty text."""
    if not text:
        return 0
    size = len(text.encode("utf-8"))
    return -(-size // BYTES_PER_TOKEN)


def estimate_messages_tokens(messages: Iterable[Message]) -> int:
    """Estimate the prompt tokens of a chat request."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(message.content)
    return total


def estimate_completion_tokens(text: str, chunks: int) -> int:
    """Estimate the tokens of a completion received as `chunks` text deltas.

    Upstreams send at most a few tokens per delta and usually one, so the number of deltas is
    a floor on the count; the byte estimate covers deltas that carry several tokens.
    """
    return max(chunks, estimate_text_tokens(text))
