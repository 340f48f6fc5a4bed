"""Payload encryption: every payload that leaves the process (workflow inputs, results,
updates, activity arguments, signals, queries) is sealed with AES-GCM before the Temporal
server sees it, so histories and the server's database hold no readable PHI.

Keys live in a key file (JSON: {"active": "<id>", "keys": {"<id>": "<base64 32 bytes>"}}):
the active key seals, every listed key opens, so a key can be rotated by adding a new active
one and keeping the old until no history needs it."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from clinical.textfile import FileRefused, read_text_file
from infra.files import write_private

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE = 12


class KeyFileError(ValueError):
    """A key file CarePath cannot use, or a payload sealed with a key it does not have."""


@dataclass(frozen=True)
class KeyRing:
    active: str
    keys: dict[str, bytes]

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            raw = json.loads(read_text_file(path, "a key file", 64 * 1024))
            keys = {kid: base64.b64decode(k, validate=True) for kid, k in raw["keys"].items()}
            active = raw["active"]
        except FileRefused as exc:
            raise KeyFileError(str(exc)) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a CarePath key file ({exc})") from None
        if active not in keys or any(len(k) != 32 for k in keys.values()):
            raise KeyFileError(f"{path}: the active key must be listed and every key 32 bytes")
        return cls(active=active, keys=keys)

    def rotated(self, key_id: str | None = None) -> KeyRing:
        kid = key_id or f"k{secrets.token_hex(4)}"
        return KeyRing(active=kid, keys={**self.keys, kid: AESGCM.generate_key(bit_length=256)})

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """The key file, made on first use. Two processes starting at once agree: the file
        appears whole (written aside, then linked) and the second one loads it."""
        if not path.exists():
            ring = cls.create_new()
            aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            ring.save(aside)
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            finally:
                aside.unlink()
        return cls.load(path)

    @classmethod
    def create_new(cls, key_id: str | None = None) -> KeyRing:
        kid = key_id or f"k{secrets.token_hex(4)}"
        return cls(active=kid, keys={kid: AESGCM.generate_key(bit_length=256)})

    def save(self, path: Path) -> None:
        body = {
            "active": self.active,
            "keys": {kid: base64.b64encode(k).decode() for kid, k in self.keys.items()},
        }
        write_private(path, json.dumps(body, indent=2))


_told: set[str] = set()


def _missing_key(kid: str) -> str:
    """The one line for a payload this process cannot open, logged once per key id (a
    workflow task that cannot be decoded is retried: its log must not flood)."""
    message = (
        f"payload sealed with key {kid!r}, which this process's key file lacks: it reads "
        "another key file than the process that sealed it (CAREPATH_KEYS_FILE)"
    )
    if kid not in _told:
        _told.add(kid)
        logging.getLogger("carepath.codec").error(message)
    return message


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._ciphers = {kid: AESGCM(key) for kid, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.seal(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.open(payloads)

    def seal(self, payloads: Iterable[Payload]) -> list[Payload]:
        kid = self.ring.active
        cipher = self._ciphers[kid]
        sealed = []
        for p in payloads:
            nonce = secrets.token_bytes(_NONCE)
            data = nonce + cipher.encrypt(nonce, p.SerializeToString(), kid.encode())
            sealed.append(Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=data))
        return sealed

    def open(self, payloads: Iterable[Payload]) -> list[Payload]:
        """Unsealed payloads (histories recorded before encryption) pass through."""
        opened = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                opened.append(p)
                continue
            kid = p.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise KeyFileError(_missing_key(kid))
            plain = cipher.decrypt(p.data[:_NONCE], p.data[_NONCE:], kid.encode())
            opened.append(Payload.FromString(plain))
        return opened
