"""OpenTelemetry traces of one streamed generation, caught by the SDK's in-memory exporter:
the request's span and its children (admission, upstream with its first token, settlement)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from conftest import User
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import ServerThread
from tollgate_server.observability import tracing

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    try:
        yield memory
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def test_a_streamed_generation_is_one_trace_of_four_spans(
    exporter: InMemorySpanExporter,
    server: ServerThread,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=user.token, max_retries=0, timeout=30
    )
    raw = client.chat.completions.with_raw_response.create(
        model=test_models["openai"],
        messages=[{"role": "user", "content": "trace me [[fake:chunks=4]]"}],
        stream=True,
    )
    chunks = list(raw.parse())
    assert chunks
    request_id = raw.headers["x-request-id"]

    spans = _spans_once_request_ended(exporter, "POST /v1/chat/completions")
    requests = [s for s in spans if s.name == "POST /v1/chat/completions"]
    assert len(requests) == 1, [s.name for s in spans]
    request = requests[0]
    context = request.get_span_context()
    assert context is not None
    # One id finds the trace, the log line and the answer.
    assert request_id == format(context.trace_id, "032x")
    assert request.parent is None
    attributes = request.attributes or {}
    assert attributes["http.route"] == "/v1/chat/completions"
    assert attributes["http.response.status_code"] == 200
    assert attributes["tollgate.status"] == "completed"
    assert attributes["tollgate.model"] == test_models["openai"]
    assert attributes["tollgate.request_id"] == request_id

    children: dict[str, ReadableSpan] = {}
    for span in spans:
        if span.name.startswith("tollgate."):
            assert span.parent is not None, span.name
            assert span.parent.span_id == context.span_id, span.name
            span_context = span.get_span_context()
            assert span_context is not None, span.name
            assert span_context.trace_id == context.trace_id, span.name
            children[span.name] = span
    assert set(children) == {"tollgate.admission", "tollgate.upstream", "tollgate.settlement"}

    admission, upstream, settlement = (
        children[f"tollgate.{name}"] for name in ("admission", "upstream", "settlement")
    )
    assert [event.name for event in upstream.events] == ["first_token"]
    first_token = upstream.events[0].timestamp
    assert upstream.start_time is not None and upstream.end_time is not None
    assert upstream.start_time <= first_token <= upstream.end_time
    assert (upstream.attributes or {})["chunks"] == 4
    # In order: admitted, then the upstream's answer, then the settlement, inside the request.
    assert admission.end_time is not None and settlement.start_time is not None
    assert request.start_time is not None and request.end_time is not None
    assert request.start_time <= admission.start_time  # type: ignore[operator]
    assert admission.end_time <= upstream.start_time
    assert upstream.end_time <= settlement.start_time
    assert settlement.end_time <= request.end_time  # type: ignore[operator]
    assert (settlement.attributes or {})["status"] == "completed"


def _spans_once_request_ended(
    exporter: InMemorySpanExporter, name: str, seconds: float = 5.0
) -> tuple[ReadableSpan, ...]:
    """The finished spans once the request's own span is among them. The request's span ends
    when the server's handler returns, which can be a moment after the client has read the
    stream's last byte: the test waits for it rather than racing it."""
    deadline = time.monotonic() + seconds
    while True:
        spans = exporter.get_finished_spans()
        if any(s.name == name for s in spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def test_a_callers_traceparent_makes_the_request_part_of_its_trace(
    exporter: InMemorySpanExporter, server: ServerThread
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = httpx.get(
        f"{server.url}/healthz", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == trace_id
    spans = _spans_once_request_ended(exporter, "GET /healthz")
    (span,) = [s for s in spans if s.name == "GET /healthz"]
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    span_context = span.get_span_context()
    assert span_context is not None
    assert format(span_context.trace_id, "032x") == trace_id


def test_traces_are_off_unless_the_otel_variables_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )
    # While off, a span costs nothing and records nothing.
    assert not tracing.enabled()
    with tracing.span("admission") as span:
        assert span is None
    assert tracing.start("upstream") is None and tracing.current() is None


def test_the_standard_variables_switch_traces_on_and_shutdown_off() -> None:
    tracing.configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "tollgate-test"})
    try:
        assert tracing.enabled()
        assert tracing._provider is not None
        assert tracing._provider.resource.attributes["service.name"] == "tollgate-test"
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
