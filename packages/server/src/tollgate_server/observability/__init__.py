"""Operating Tollgate: Prometheus metrics, OpenTelemetry traces and structured logs.

Everything here reads what already flows (the request-context middleware's per-request log
dict, the runtime's pools) so that the business code carries at most a few span calls.
"""

from tollgate_server.observability.access import MetricsAccess, parse_metrics_access
from tollgate_server.observability.metrics import Metrics, get_metrics

__all__ = ["Metrics", "MetricsAccess", "get_metrics", "parse_metrics_access"]
