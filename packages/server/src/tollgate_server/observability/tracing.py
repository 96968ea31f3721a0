"""OpenTelemetry traces: a span for the request, admission, the upstream call and settlement.

Off unless the standard variables ask for it (``OTEL_TRACES_EXPORTER`` other than ``none``, or
an ``OTEL_EXPORTER_OTLP_*ENDPOINT``; ``OTEL_SDK_DISABLED=true`` wins) and the SDK is installed
(``tollgate-server[otel]``). While off, every helper here returns at once: the generation path
pays one global read per span.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

logger = logging.getLogger("tollgate.tracing")

_tracer: trace.Tracer | None = None
_provider: Any = None
"""The SDK's TracerProvider this module built (shut down, so that spans are flushed, on exit)."""


def enabled() -> bool:
    return _tracer is not None


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(env: Mapping[str, str] | None = None) -> None:
    """Switch traces on when the environment asks for them (once per process)."""
    global _provider
    if _tracer is not None:
        return
    env = os.environ if env is None else env
    if not wanted(env):
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        logger.warning(
            "OTEL_* asks for traces but the SDK is missing: install tollgate-server[otel]"
        )
        return
    exporter: Any
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            logger.warning(
                "OTEL_* asks for OTLP but the exporter is missing: install tollgate-server[otel]"
            )
            return
        exporter = OTLPSpanExporter()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "tollgate")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    use_tracer_provider(provider)


def use_tracer_provider(provider: Any) -> None:
    """Trace with `provider` (an SDK TracerProvider), or stop tracing with None (tests)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("tollgate")


def shutdown() -> None:
    """Flush and stop the exporter this module started."""
    global _provider
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()
        _provider = None
        use_tracer_provider(None)


# --- spans -----------------------------------------------------------------------------------


def start_request(method: str, headers: Iterable[tuple[bytes, bytes]]) -> Any:
    """The request's span, made current until `end_request`; None while tracing is off.

    A caller's W3C ``traceparent`` (a proxy's, a client's) makes it a child of the caller's
    trace."""
    if _tracer is None:
        return None
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    parent = propagate.extract(carrier) if carrier else None
    span = _tracer.start_span(method, context=parent, kind=trace.SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(span))
    return span, token


def trace_id(handle: Any) -> str | None:
    """The request's trace id in hex (as the logs and X-Request-Id show it)."""
    if handle is None:
        return None
    return format(handle[0].get_span_context().trace_id, "032x")


def end_request(handle: Any, name: str, attributes: Mapping[str, Any]) -> None:
    """Name the span by its route template (known only once routed), label it, end it."""
    if handle is None:
        return
    span, token = handle
    with contextlib.suppress(Exception):
        span.update_name(name)
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        status = attributes.get("http.response.status_code")
        if isinstance(status, int) and status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
    with contextlib.suppress(ValueError):  # detached in another context (a cancelled request)
        otel_context.detach(token)


def current() -> Any:
    """The current context, to parent a span started later elsewhere; None while off."""
    return None if _tracer is None else otel_context.get_current()


@contextlib.contextmanager
def _no_span() -> Iterator[None]:
    yield None


def span(name: str, parent: Any = None) -> contextlib.AbstractContextManager[Any]:
    """``with tracing.span("admission"):``: a child span of the current (or `parent`) context;
    it records an exception that escapes it."""
    if _tracer is None:
        return _no_span()
    return _tracer.start_as_current_span(f"tollgate.{name}", context=parent)


def start(name: str, parent: Any = None) -> Any:
    """A span that the caller ends with `end` (for a block that cannot be indented)."""
    if _tracer is None:
        return None
    return _tracer.start_span(f"tollgate.{name}", context=parent)


def event(span_: Any, name: str) -> None:
    if span_ is not None:
        span_.add_event(name)


def end(span_: Any, **attributes: Any) -> None:
    if span_ is not None:
        span_.set_attributes({k: v for k, v in attributes.items() if v is not None})
        span_.end()
