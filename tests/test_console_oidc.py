"""OpenID Connect sign-in against a small identity provider of the test's own, served over
real HTTP on loopback: discovery, an authorize endpoint that approves at once, a token
endpoint that checks the code and PKCE verifier, and its signing keys."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.console_support import store_only_console
from tests.test_console_browser import serving
from web.oidc import OidcSignIn
from web.security import SESSION_COOKIE


@dataclasses.dataclass
class Provider:
    """What the test's identity provider says about whoever signs in next."""

    username: str = "cm1"
    audience: str = "carepath-console"
    nonce_override: str | None = None
    key: RSAKey = dataclasses.field(default_factory=lambda: RSAKey.generate_key(2048))


def provider_app(p: Provider, issuer: list[str]) -> FastAPI:
    app = FastAPI()
    codes: dict[str, dict[str, str]] = {}

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, str]:
        return {
            "issuer": issuer[0],
            "authorization_endpoint": f"{issuer[0]}/authorize",
            "token_endpoint": f"{issuer[0]}/token",
            "jwks_uri": f"{issuer[0]}/jwks",
        }

    @app.get("/authorize")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        code = secrets.token_urlsafe(16)
        codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"]}
        back = urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(f"{q['redirect_uri']}?{back}", status_code=302)

    @app.post("/token")
    async def token(code: str = Form(), code_verifier: str = Form()) -> Response:
        issued = codes.pop(code, None)
        digest = hashlib.sha256(code_verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if issued is None or issued["challenge"] != challenge:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": issuer[0],
            "aud": p.audience,
            "sub": "user-1",
            "preferred_username": p.username,
            "iat": now,
            "exp": now + 300,
            "nonce": p.nonce_override or issued["nonce"],
        }
        encoded = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, p.key)
        return JSONResponse({"id_token": encoded, "token_type": "Bearer"})

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [{**p.key.as_dict(private=False), "kid": "k1"}]}

    return app


@asynccontextmanager
async def identity_provider(p: Provider) -> AsyncIterator[str]:
    issuer: list[str] = []
    app = provider_app(p, issuer)
    async with serving(app) as base:
        issuer.append(base)
        yield base


async def _sign_in(http: httpx.AsyncClient, provider_base: str) -> httpx.Response:
    """The browser's round: the console sends it to the provider, which sends it back."""
    start = await http.get("/sign-in/oidc")
    assert start.status_code == 303 and start.headers["location"].startswith(provider_base)
    async with httpx.AsyncClient() as browser:
        approved = await browser.get(start.headers["location"])
    assert approved.status_code == 302
    back = urlsplit(approved.headers["location"])
    return await http.get(f"{back.path}?{back.query}")


async def test_oidc_signs_in_a_console_account_and_refuses_what_does_not_verify(
    tmp_path: Path,
) -> None:
    p = Provider()
    async with identity_provider(p) as issuer, store_only_console(tmp_path) as ui:
        ui.console.oidc = OidcSignIn(
            issuer, "carepath-console", "s3cret", "http://console.test/sign-in/oidc/callback"
        )
        async with ui.signed_in(None) as http:
            password = await http.post("/sign-in", data={"username": "cm1", "password": "x"})
            page = await http.get("/sign-in")
            signed_in = await _sign_in(http, issuer)
            caseload = await http.get("/caseload")
        p.username = "stranger"
        async with ui.signed_in(None) as http:
            unknown = await _sign_in(http, issuer)
        p.username, p.nonce_override = "cm1", "someone-elses-nonce"
        async with ui.signed_in(None) as http:
            replayed = await _sign_in(http, issuer)
        p.nonce_override, p.audience = None, "another-app"
        async with ui.signed_in(None) as http:
            other_app = await _sign_in(http, issuer)
        p.audience = "carepath-console"
        async with ui.signed_in(None) as http:
            forged_state = await http.get(
                "/sign-in/oidc/callback", params={"code": "x", "state": "y"}
            )
            no_session = SESSION_COOKIE not in http.cookies
        refused = [
            e.actor
            for e in ui.console.access.search()
            if e.action == "sign in" and e.outcome == "refused"
        ]
    assert password.status_code == 403 and "identity provider" in password.text
    assert 'href="/sign-in/oidc"' in page.text and 'name="password"' not in page.text
    assert signed_in.status_code == 200 and 'content="0;url=/caseload"' in signed_in.text
    assert caseload.status_code == 200 and "My caseload" in caseload.text
    assert unknown.status_code == 403 and "no console account for stranger" in unknown.text
    assert replayed.status_code == 401 and "nonce" in replayed.text
    assert other_app.status_code == 401 and "audience" in other_app.text
    assert forged_state.status_code == 401 and "state does not match" in forged_state.text
    assert no_session
    assert "stranger" in refused
