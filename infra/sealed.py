"""Columns sealed at rest: the store's contact, assessment and check-in columns hold AES-GCM
ciphertext under the payload key ring (the key id in each value, so keys rotate), and read
back as text for whoever holds the keys.

The keys ride on the store's engine (`attach_keys`), so each store seals with its own ring.
A value written before sealing existed (no prefix) reads back as it is; a sealed value read
without its key is refused, naming the key id. IDs and the fields the store searches on stay
in the clear (and opaque)."""

from __future__ import annotations

import base64
import math
import secrets
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import String, Text, TypeDecorator
from sqlalchemy.engine import Dialect, Engine

from infra.codec import KeyFileError, KeyRing

PREFIX = "sealed1:"
KEY_ID_MAX = 32
_NONCE = 12
_TAG = 16
_ASSOCIATED = b"carepath-store"


def sealed_length(chars: int) -> int:
    """The longest sealed text of a value of `chars` characters (UTF-8: 4 bytes each)."""
    raw = _NONCE + 4 * chars + _TAG
    return len(PREFIX) + KEY_ID_MAX + 1 + 4 * math.ceil(raw / 3)


def attach_keys(engine: Engine, ring: KeyRing | None) -> None:
    """The ring this store seals and opens with (None: written in the clear)."""
    engine.dialect.carepath_keys = ring  # type: ignore[attr-defined]


def _ring(dialect: Dialect) -> KeyRing | None:
    ring: KeyRing | None = getattr(dialect, "carepath_keys", None)
    return ring


def seal(value: str, ring: KeyRing) -> str:
    nonce = secrets.token_bytes(_NONCE)
    data = AESGCM(ring.keys[ring.active]).encrypt(nonce, value.encode(), _ASSOCIATED)
    return f"{PREFIX}{ring.active}:{base64.b64encode(nonce + data).decode()}"


def unseal(value: str, ring: KeyRing | None) -> str:
    if not value.startswith(PREFIX):
        return value  # written before the store sealed anything
    kid, _, body = value[len(PREFIX) :].partition(":")
    key = None if ring is None else ring.keys.get(kid)
    if key is None:
        raise KeyFileError(f"a store value is sealed with key {kid!r}, which this process lacks")
    raw = base64.b64decode(body)
    return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], _ASSOCIATED).decode()


class SealedText(TypeDecorator[str]):
    """Text sealed at rest. `length`: the longest clear value (the column is sized for its
    sealed form); none for unbounded text."""

    impl = Text
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__()
        self.clear_length = length
        if length is not None:
            self.impl = String(sealed_length(length))  # type: ignore[assignment]

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        impl = Text() if self.clear_length is None else String(sealed_length(self.clear_length))
        return dialect.type_descriptor(impl)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        ring = _ring(dialect)
        if value is None or ring is None:
            return value
        return seal(value, ring)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unseal(value, _ring(dialect))
