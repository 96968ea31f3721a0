"""tollgate-anthropic keeps the provider contract, over HTTP against the fake upstream."""

from __future__ import annotations

from tollgate_anthropic import AnthropicProvider
from tollgate_core.testing import ProviderContract


class TestAnthropicContract(ProviderContract):
    provider_class = AnthropicProvider
    api_key = "sk-ant-contract-SECRET-0123456789abcdef"
    model = "claude-fake"
