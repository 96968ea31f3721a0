"""tollgate-gemini keeps the provider contract, over HTTP against the fake upstream."""

from __future__ import annotations

from tollgate_core.testing import ProviderContract
from tollgate_gemini import GeminiProvider


class TestGeminiContract(ProviderContract):
    provider_class = GeminiProvider
    api_key = "AIzaContractSECRET0123456789abcdefghijk"
    model = "gemini-fake"
