"""tollgate_core.upstream: safe messages, redaction and the mapping of failures."""

from __future__ import annotations

import aiohttp
import pytest
from tollgate_core import (
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tollgate_core.upstream import (
    MAX_VENDOR_MESSAGE,
    check_extras,
    parse_retry_after,
    redact,
    safe_message,
    status_error,
    stream_error,
    transport_error,
    upstream_request_id,
    vendor_error_message,
)


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-AbCdEf0123456789",
        "sk-ant-api03-AbCdEf0123456789",
        "AIzaSyA-0123456789abcdefghijk",
        "tg-0123456789abcdef",
        "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "bearer opaque_token_value",
    ],
)
def test_key_shaped_tokens_are_redacted(secret: str) -> None:
    text = redact(f"invalid credentials ({secret}), try again")
    assert secret not in text and "[redacted]" in text


def test_the_configured_key_is_redacted_whatever_its_shape() -> None:
    assert redact("key=plainsecret!", ["plainsecret", None, ""]) == "key=[redacted]!"


@pytest.mark.parametrize("text", ["task-runner failed", "the disk-0123456789 is full", "tg-1"])
def test_ordinary_words_survive(text: str) -> None:
    assert redact(text) == text


def test_safe_message_redacts_before_cutting() -> None:
    key = "sk-" + "a" * 40
    message = safe_message("upstream answered 400", "x" * (MAX_VENDOR_MESSAGE - 10) + " " + key)
    assert "sk-" not in message
    assert len(message) <= len("upstream answered 400: ") + MAX_VENDOR_MESSAGE
    assert safe_message("upstream answered 500", "") == "upstream answered 500"
    assert safe_message("p", "two\n  lines") == "p: two lines"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"m1","type":"x"}}', "m1"),
        (b'[{"error":{"code":400,"message":"m2"}}]', "m2"),
        (b'{"type":"error","error":{"type":"x","message":"m3"}}', "m3"),
        (b'{"error":"m4"}', "m4"),
        (b'{"message":"m5"}', "m5"),
        (b'{"detail":"m6"}', "m6"),
        (b"<html>502 Bad Gateway</html>", ""),
        (b'{"error":{"code":1}}', ""),
    ],
)
def test_vendor_error_message(body: bytes, message: str) -> None:
    assert vendor_error_message(body) == message


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(date, now=1445412470.0) == 10.0


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, UpstreamBadRequest),
        (404, UpstreamBadRequest),
        (401, UpstreamAuthenticationError),
        (403, UpstreamAuthenticationError),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (529, UpstreamUnavailable),
        (504, UpstreamTimeout),
    ],
)
def test_status_error(status: int, error_class: type[Exception]) -> None:
    error = status_error(status, "for sk-mine-0123456789", secrets=["sk-mine-0123456789"])
    assert isinstance(error, error_class)
    assert str(error) == f"upstream answered {status}: for [redacted]"


def test_status_error_keeps_retry_after() -> None:
    error = status_error(429, "slow down", retry_after=2.0)
    assert isinstance(error, UpstreamRateLimited) and error.retry_after == 2.0


def test_stream_error() -> None:
    error = stream_error(529, "Overloaded")
    assert isinstance(error, UpstreamUnavailable)
    assert str(error) == "upstream failed mid-stream (529): Overloaded"


def test_transport_errors() -> None:
    assert isinstance(transport_error(TimeoutError()), UpstreamTimeout)
    assert isinstance(transport_error(aiohttp.ServerTimeoutError("t")), UpstreamTimeout)
    reset = transport_error(ConnectionResetError("reset by sk-abcdefgh12345"))
    assert isinstance(reset, UpstreamUnavailable) and "sk-abc" not in str(reset)
    assert isinstance(transport_error(aiohttp.ServerDisconnectedError()), UpstreamUnavailable)


def test_check_extras() -> None:
    check_extras({"seed": 1}, frozenset({"seed"}), upstream="X")
    with pytest.raises(UpstreamBadRequest, match="X upstreams do not support: n, tools"):
        check_extras({"tools": [], "n": 2, "seed": 1}, frozenset({"seed"}), upstream="X")


@pytest.mark.parametrize(
    "masked",
    ["sk-canar****cdef", "sk-proj-********************abcd", "sk-abc...wxyz", "AIzaSy…9xyz"],
)
def test_keys_shown_masked_are_redacted(masked: str) -> None:
    text = redact(f"Incorrect API key provided: {masked}. You can find your key at ...")
    assert masked not in text and "[redacted]" in text
    assert masked[:8] not in text and masked[-4:] not in text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-request-id": "req_0123abcDEF"}, "req_0123abcDEF"),
        ({"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}, "req_011CSHoEeqs5C35K2UUqR7Fy"),
        ({"x-request-id": " req-1 "}, "req-1"),
        ({"x-request-id": "req 1; see internal-lb-7:8443"}, None),
        ({"x-request-id": "<b>hi</b>"}, None),
        ({"x-request-id": "r" * 200}, None),
        ({}, None),
    ],
)
def test_upstream_request_id_is_a_plain_token_or_nothing(
    headers: dict[str, str], expected: str | None
) -> None:
    assert upstream_request_id(headers) == expected


@pytest.mark.parametrize(
    "text",
    [
        "plain words, a uuid 0b6f7c1e-0c4d-4f7e-9a51-1f0d2c3b4a59 and a path /v1/chat/completions",
        "BEARER abcdefgh12345678",
        "bEaReR abcdefgh12345678 and sk-proj-AbCdEf0123456789",
        "masked sk-abcde****wxyz and AIza...wxyz",
        "AIzaSyA-0123456789abcdefghijk, tg-0123456789abcdef",
        "task-runner and disk-0123456789 are ordinary",
    ],
)
def test_the_quick_check_never_skips_a_key_the_pattern_would_find(text: str) -> None:
    from tollgate_core.upstream import _KEY_LIKE, REDACTED, may_hold_a_key

    assert redact(text) == _KEY_LIKE.sub(REDACTED, text)
    if _KEY_LIKE.search(text):
        assert may_hold_a_key(text)
