"""Upstream keys at rest: AES-GCM under a key from ``TOLLGATE_SECRET_KEY`` (or generated once
into the data directory, like the JWT secret).

A stored key is ``nonce (12 bytes) || ciphertext+tag``. The deployment's id is the associated
data, so a ciphertext copied onto another deployment's row does not decrypt. Keys are
write-only: the API shows their last four characters, never more.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tollgate_core import ConfigurationError

NONCE_BYTES = 12


class CredentialBox:
    """Encrypts and decrypts upstream keys with one AES-256-GCM key."""

    def __init__(self, secret: str) -> None:
        # Any string of the operator's becomes a 256-bit key; the generated one has 384 bits.
        self._aead = AESGCM(hashlib.sha256(secret.encode()).digest())

    def __repr__(self) -> str:
        return "CredentialBox()"

    def encrypt(self, api_key: str, *, deployment_id: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, api_key.encode(), _aad(deployment_id))

    def decrypt(self, blob: bytes, *, deployment_id: int) -> str:
        """The key, or a `ConfigurationError` that says what to do (never the ciphertext)."""
        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(deployment_id))
        except (InvalidTag, ValueError):
            raise ConfigurationError(
                f"the upstream key of deployment {deployment_id} cannot be decrypted: "
                "TOLLGATE_SECRET_KEY (or the data directory's secret-key file) is not the key "
                "that encrypted it; restore that key, or set the deployment's key again"
            ) from None
        return plain.decode()


def last_four(api_key: str) -> str:
    """What the API shows of a key: its last four characters (all of a very short key hidden)."""
    return api_key[-4:] if len(api_key) >= 12 else ""


def _aad(deployment_id: int) -> bytes:
    return f"tollgate-deployment:{deployment_id}".encode()
