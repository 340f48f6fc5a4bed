"""The codec server: lets an operator signed in at the console read sealed payloads in the
Temporal Web UI.

The UI posts payloads to `<endpoint>/decode` (and `/encode`) in Temporal's JSON form. The
endpoint carries no secret. A request is decoded only when it carries the console's session
cookie (HttpOnly, SameSite=Strict) of an open session of an operator: the UI sends it when
its codec setting "Include cross-origin credentials" is on, since the console, the UI and
the codec server are one site on the operators' host (cookies do not tell ports apart). So
whoever merely reaches the UI reads ciphertext, a case manager's session reads ciphertext,
and the console's idle sign-out and sign-out end the codec's access too. Every decode is in
the access log under the operator's name.

It listens on loopback only, unless told to listen on a container's interfaces (whose port is
then published on the host's loopback only). Nothing is logged but the count of payloads
(never content or cookies)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from infra.codec import EncryptionCodec, KeyFileError
from infra.logging import get_logger
from infra.store.access_log import AccessLog
from infra.store.accounts import IdentityStore, Role

log = get_logger("carepath.codec_server")

CONSOLE_COOKIE = "carepath_session"  # the console's (web.security.SESSION_COOKIE)
_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>CarePath codec server"
    "</title></head><body><h1>CarePath codec server</h1><p>{message}</p></body></html>"
)

Operator = Callable[[str | None], str | None]
"""Given the console session's token from the cookie (None: no cookie), the operator's
username, or None when it is no open operator's session."""
Audit = Callable[[str, str, str], None]
"""Records (username, what, address) in the access log."""


def console_operators(
    identity: IdentityStore,
    access: AccessLog,
    idle: timedelta,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[Operator, Audit]:
    """Who is an operator signed in at the console (a use counts as activity, as a page
    would), and the access log's record of what they decoded."""

    def operator(token: str | None) -> str | None:
        user = token and identity.session_user(token, now(), idle)
        return user.username if user and user.role is Role.operator else None

    def audit(username: str, what: str, address: str) -> None:
        access.append(now(), username, Role.operator.value, what, address=address)

    return operator, audit


class CodecServer:
    def __init__(
        self,
        codec: EncryptionCodec,
        operator: Operator,
        audit: Audit,
        port: int,
        ui_origin: str,
        host: str = "127.0.0.1",
        console_url: str = "",
    ) -> None:
        self.codec, self.ui_origin, self.console_url = codec, ui_origin, console_url
        self.operator, self.audit = operator, audit
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """What the UI is told: no secret in it."""
        return f"http://{self.host}:{self.port}"

    def serve_in_background(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def transform(self, operation: str, body: bytes) -> bytes:
        payloads = json_format.Parse(body, Payloads())
        run = self.codec.decode if operation == "decode" else self.codec.encode
        done = asyncio.run(run(list(payloads.payloads)))
        log.info("codec_request", operation=operation, payloads=len(done))
        return json_format.MessageToJson(Payloads(payloads=done)).encode()


def _handler(server: CodecServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # sign-ins and payload counts are logged by name, nothing else

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", server.ui_origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "content-type, x-namespace")
            self.send_header("Access-Control-Allow-Credentials", "true")

        def _security(self) -> None:
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "default-src 'none'; form-action 'self'")

        def _operator(self) -> str | None:
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            token = cookie[CONSOLE_COOKIE].value if CONSOLE_COOKIE in cookie else None
            return server.operator(token)

        def _path(self) -> str:
            # The UI adds query parameters (e.g. preserveStorageRefs): the path alone decides.
            return urlsplit(self.path).path.rstrip("/") or "/"

        def _answer(self, status: HTTPStatus, body: bytes = b"", kind: str = "") -> None:
            self.send_response(status)
            self._cors()
            self._security()
            if kind:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _page(self, status: HTTPStatus, message: str) -> None:
            self._answer(status, _PAGE.format(message=message).encode(), "text/html")

        def do_OPTIONS(self) -> None:
            self._answer(HTTPStatus.NO_CONTENT)

        def do_GET(self) -> None:
            if self._path() in ("/", "/signin"):
                self._page(
                    HTTPStatus.OK,
                    "Payloads open here for an operator signed in at the console "
                    f"({server.console_url or 'starter.py console'}), in the Web UI with its "
                    "codec setting 'Include cross-origin credentials' on."
                    if self._operator() is None
                    else "Signed in at the console as an operator: the Web UI can read payloads.",
                )
                return
            self._answer(HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            path = self._path()
            length = int(self.headers.get("Content-Length") or 0)
            if path not in ("/decode", "/encode"):
                self._answer(HTTPStatus.NOT_FOUND)
                return
            operator = self._operator()
            if operator is None:
                self._answer(HTTPStatus.UNAUTHORIZED)
                return
            try:
                answer = server.transform(path.strip("/"), self.rfile.read(length))
            except (json_format.ParseError, KeyFileError, InvalidTag, ValueError):
                self._answer(HTTPStatus.BAD_REQUEST)
                return
            server.audit(operator, f"{path.strip('/')} payloads", self.client_address[0])
            self._answer(HTTPStatus.OK, answer, "application/json")

    return Handler
