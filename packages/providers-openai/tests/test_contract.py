"""tollgate-openai keeps the provider contract, over HTTP against the fake upstream."""

from __future__ import annotations

from tollgate_core import ProviderConfig
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_core.testing import ProviderContract
from tollgate_openai import OpenAIProvider


class TestOpenAIContract(ProviderContract):
    provider_class = OpenAIProvider

    def make_config(self, upstream: FakeUpstream) -> ProviderConfig:
        return ProviderConfig(
            name="openai", base_url=upstream.openai_base_url, api_key=self.api_key
        )
