"""OpenID Connect sign-in for production (chosen by settings: CAREPATH_OIDC_ISSUER): the
authorization-code flow with PKCE against the clinic's identity provider, the ID token's
signature checked against the provider's published keys (joserfc) and its issuer, audience,
expiry and nonce against this sign-in. Who may do what stays the console's: the provider
says who someone is, and a console account of that username (made with `users add --oidc`,
which has no password here) says their role and caseload."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

SCOPES = "openid profile email"
LEEWAY_SECONDS = 60  # clock skew allowed between the provider and us


class OidcRefused(Exception):
    """A sign-in the provider or its token did not bear out: one line, no token in it."""


@dataclass(frozen=True)
class Pending:
    """What a sign-in started with, kept in a short-lived HttpOnly cookie until the
    provider sends the browser back: the state it must echo, the nonce its token must
    carry, and the PKCE verifier only this console knows."""

    state: str
    nonce: str
    verifier: str

    def cookie(self) -> str:
        return f"{self.state}.{self.nonce}.{self.verifier}"

    @classmethod
    def from_cookie(cls, value: str | None) -> Pending | None:
        parts = (value or "").split(".")
        return cls(*parts) if len(parts) == 3 and all(parts) else None


class OidcSignIn:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer, self.client_id = issuer.rstrip("/"), client_id
        self.client_secret, self.redirect_uri = client_secret, redirect_uri
        self._transport = transport
        self._metadata: dict[str, Any] | None = None

    async def _get(self, url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self._transport, timeout=10) as http:
            answer = await http.get(url)
        if answer.status_code != 200:
            raise OidcRefused(f"the identity provider answered {answer.status_code} at {url}")
        found: dict[str, Any] = answer.json()
        return found

    async def metadata(self) -> dict[str, Any]:
        """The provider's configuration (fetched once; its issuer must be the one set)."""
        if self._metadata is None:
            found = await self._get(f"{self.issuer}/.well-known/openid-configuration")
            if str(found.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcRefused("the identity provider names another issuer")
            self._metadata = found
        return self._metadata

    async def start(self) -> tuple[str, Pending]:
        """Where to send the browser, and what to remember until it comes back."""
        pending = Pending(
            secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        )
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": SCOPES,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{(await self.metadata())['authorization_endpoint']}?{query}", pending

    async def finish(self, code: str, state: str, pending: Pending | None) -> str:
        """The signed-in person's username, once the code is exchanged and the ID token
        checked; OidcRefused otherwise."""
        if pending is None or not secrets.compare_digest(state, pending.state):
            raise OidcRefused("this sign-in was not started here (state does not match)")
        meta = await self.metadata()
        async with httpx.AsyncClient(transport=self._transport, timeout=10) as http:
            answer = await http.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": pending.verifier,
                },
                auth=(self.client_id, self.client_secret),
            )
        if answer.status_code != 200:
            raise OidcRefused(f"the identity provider refused the code ({answer.status_code})")
        id_token = answer.json().get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused("the identity provider sent no ID token")
        keys = KeySet.import_key_set(await self._get(meta["jwks_uri"]))  # type: ignore[arg-type]
        try:
            token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"])
        except (JoseError, ValueError) as exc:
            raise OidcRefused(f"the ID token does not verify ({type(exc).__name__})") from None
        return self._username(token.claims, pending)

    def _username(self, claims: dict[str, Any], pending: Pending) -> str:
        now = time.time()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        checks = (
            (str(claims.get("iss", "")).rstrip("/") == self.issuer, "another issuer"),
            (self.client_id in audiences, "another audience"),
            (float(claims.get("exp", 0)) + LEEWAY_SECONDS > now, "it has expired"),
            (float(claims.get("iat", now)) - LEEWAY_SECONDS <= now, "it is issued in the future"),
            (claims.get("nonce") == pending.nonce, "another sign-in's nonce"),
        )
        for holds, why in checks:
            if not holds:
                raise OidcRefused(f"the ID token is not for this sign-in: {why}")
        username = claims.get("preferred_username") or claims.get("email")
        if not isinstance(username, str) or not username:
            raise OidcRefused("the ID token names no user (preferred_username or email)")
        return username.lower()
