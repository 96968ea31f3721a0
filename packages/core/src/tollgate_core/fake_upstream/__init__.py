"""A fake LLM upstream over real HTTP on a loopback port, for tests: no keys, no internet.

`FakeUpstream` is a small ``aiohttp.web`` server that speaks three wire protocols, streaming
and not, and records every request it gets:

* OpenAI chat: ``POST <any prefix>/chat/completions`` (so a base URL of ``…/v1`` works);
  ``"stream": true`` answers with SSE chunks, a usage chunk with empty ``choices`` when
  ``stream_options.include_usage`` is set, and ``data: [DONE]``.
* Gemini: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (key in ``x-goog-api-key``).
* Anthropic messages: ``POST /v1/messages`` with ``anthropic-version`` and ``x-api-key``; the
  stream is the real event sequence ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta``…, ``content_block_stop``, ``message_delta``, ``message_stop``.

* Embeddings: OpenAI's ``POST <any prefix>/embeddings`` and Gemini's
  ``POST /v1beta/models/{model}:batchEmbedContents``, answering deterministic vectors
  (`tollgate_core.fake_upstream.embeddings`); OpenAI's answer counts the inputs' words + 2 per
  input as ``prompt_tokens``, Gemini's reports no usage, as the real one.

A request without its protocol's key header is answered 401 (pass ``require_key=False`` to
allow it). Bodies validate against the vendors' SDK types (the tests check this).

**Default answer.** ``"tok0 tok1 … tok{N-1}"``, one word per chunk, where N is the request's max
tokens capped at ``default_chunks`` (5); the finish reason is ``length`` when the cap was the
max tokens. Usage is exact: input tokens = the whitespace-separated words of every message
(system prompt included) + 2 per message; output tokens = the number of chunks.

**Directives.** Put ``[[fake:name=value,flag,...]]`` anywhere in the LAST user message: it passes
through a gateway unchanged. Several blocks merge; an unknown name is answered with a 400.

=======================  ======================================================================
``status=429``           answer that status with a vendor-format error body (which echoes the
                         request's API key, as some vendors do: providers must redact it)
``retry_after=3``        with ``status``: send ``Retry-After: 3``
``leak``                 with ``status`` or ``error_after``: the error text also carries the key
                         masked as OpenAI shows it, an internal host and an organisation id
``chunks=16``            generate 16 words (still capped by max tokens)
``pad=4000``             append 4000 ``x`` to every word (big deltas that fill a socket fast)
``delay_ms=10``          pause between chunks (non-streaming: the total, before answering)
``stop_after=3``         after 3 chunks end the body cleanly, with no terminal event and no usage
``reset_after=3``        after 3 chunks reset the TCP connection (RST)
``stall_after=2``        after 2 chunks send nothing for ``stall_s`` seconds (default 30)
``stall_first_s=30``     wait before the first byte of the response
``no_usage``             report no usage at all
``usage_output=999``     report 999 output tokens, whatever the text
``usage_input=-5``       report that input count (``1e23`` is sent as a JSON float), whatever
                         the prompt
``error_after=3``        after 3 chunks send the vendor's mid-stream error event, then end the
                         body; ``error_status=529`` picks the status it stands for (default 500)
``cached=4``             report 4 of the input tokens as read from the prompt cache
``cache_write=4``        Anthropic: report 4 input tokens as written to the cache
``reasoning=7``          report 7 reasoning tokens on top of the chunks' output tokens
``thinking=3``           Anthropic: stream 3 pieces of thinking (a ``thinking`` block of
                         ``thinking_delta``s before the answer), each one reasoning token
``finish=content_filter``  finish with that reason (``stop``, ``length``, ``content_filter``,
                         ``tool_calls``) in the vendor's spelling
``tool=get_weather``     call the request's function of that name, with arguments that fit its
                         parameters' schema, streamed in pieces (OpenAI, Anthropic) or whole
                         (Gemini); once the conversation ends with a tool result, answer in
                         text instead
=======================  ======================================================================

**Structured output.** A request with a JSON Schema response format (OpenAI's
``response_format: {"type": "json_schema", ...}``, Anthropic's ``output_config.format``,
Gemini's ``responseJsonSchema``) is answered with JSON that fits the schema, in pieces, each
counted as one output token.

Every answer carries a request id header as the vendors send it (``x-request-id`` for OpenAI,
``request-id`` for Anthropic; Gemini sends none).

In non-streaming requests ``stop_after`` and ``reset_after`` both drop the connection without
an answer, and ``error_after`` answers ``error_status``.

**Records.** ``upstream.records`` holds one `UpstreamRecord` per request (protocol, path, url,
query, model, stream, the parsed JSON body, lower-cased headers, the ``api_key`` found in the
protocol's header, directives, status, the text and usage actually sent, the finish reason,
and ``outcome``). ``record.completed`` says the whole response was sent; ``record.disconnected``
says the client hung up first. Wait for either with ``record.wait_disconnected(timeout)`` or
``await record.wait_disconnected_async(timeout)`` (and the ``wait_finished`` pair).
"""

from tollgate_core.fake_upstream.dialects import ProtocolName
from tollgate_core.fake_upstream.directives import DirectiveError, Directives, parse_directives
from tollgate_core.fake_upstream.embeddings import fake_vector
from tollgate_core.fake_upstream.records import Outcome, UpstreamRecord
from tollgate_core.fake_upstream.server import FakeUpstream

__all__ = [
    "DirectiveError",
    "Directives",
    "FakeUpstream",
    "Outcome",
    "ProtocolName",
    "UpstreamRecord",
    "fake_vector",
    "parse_directives",
]
