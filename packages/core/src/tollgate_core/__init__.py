"""tollgate-core: the vocabulary every Tollgate package shares."""

from tollgate_core.billing import Settlement, admits, hold_amount, settlement_charge
from tollgate_core.errors import (
    ConfigurationError,
    PluginError,
    TollgateError,
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from tollgate_core.hookspecs import hookimpl, hookspec
from tollgate_core.image_tokens import estimate_image_tokens, image_size
from tollgate_core.images import FetchedImage, ImageRefused, fetch_image, parse_data_url
from tollgate_core.metering import CheckedUsage, UsageBounds, check_usage, token_count
from tollgate_core.money import MICRO_PER_CREDIT, AmountError, format_credits, parse_credits
from tollgate_core.plugins import PluginReport, build_plugin_manager, load_providers
from tollgate_core.pricing import Price, price_usage, round_charge
from tollgate_core.provider import Provider, ProviderConfig
from tollgate_core.tokens import (
    calibrated_messages_tokens,
    calibrated_text_tokens,
    estimate_completion_tokens,
    estimate_messages_tokens,
    estimate_text_tokens,
)
from tollgate_core.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
    UsageReport,
)

__all__ = [
    "MICRO_PER_CREDIT",
    "AmountError",
    "CheckedUsage",
    "Completion",
    "ConfigurationError",
    "FetchedImage",
    "FinishReason",
    "GenerationRequest",
    "ImageRefused",
    "Message",
    "PluginError",
    "PluginReport",
    "Price",
    "Provider",
    "ProviderConfig",
    "Settlement",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "TollgateError",
    "UpstreamAuthenticationError",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
    "UsageBounds",
    "UsageReport",
    "admits",
    "build_plugin_manager",
    "calibrated_messages_tokens",
    "calibrated_text_tokens",
    "check_usage",
    "error_for_status",
    "estimate_completion_tokens",
    "estimate_image_tokens",
    "estimate_messages_tokens",
    "estimate_text_tokens",
    "fetch_image",
    "format_credits",
    "hold_amount",
    "hookimpl",
    "hookspec",
    "image_size",
    "load_providers",
    "parse_credits",
    "parse_data_url",
    "price_usage",
    "round_charge",
    "settlement_charge",
    "token_count",
]
