"""The codec server: lets a signed-in operator read sealed payloads in the Temporal Web UI.

The UI posts payloads to `<endpoint>/decode` (and `/encode`) in Temporal's JSON form. The
endpoint carries no secret: the operator signs in once at the codec server's own page
(`<endpoint>/signin`) with the operator token (a file readable by its owner only), which
sets an HttpOnly, SameSite=Strict session cookie; the UI sends it when its codec setting
"Include cross-origin credentials" is on (the UI and the codec server are one site on the
operators' host). So the token is never in a URL, the server's command line or the UI's
public settings, and whoever merely reaches the UI reads ciphertext. Sessions end after
idle time and on sign-out; repeated wrong tokens lock an address out for a while.

It listens on loopback only, unless told to listen on a container's interfaces (whose port is
then published on the host's loopback only). Nothing is logged but the count of payloads and
sign-ins (never content, tokens or cookies)."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from infra.codec import EncryptionCodec, KeyFileError
from infra.files import write_private
from infra.logging import get_logger

log = get_logger("carepath.codec_server")

COOKIE = "carepath_codec"
IDLE_SECONDS = 15 * 60
FAILURES_BEFORE_LOCKOUT = 5
LOCKOUT_SECONDS = 15 * 60
_FORM_LIMIT = 4096
_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>CarePath codec sign-in"
    "</title></head><body><h1>CarePath codec server</h1><p>{message}</p>"
    "<form method=post action=/signin><label for=token>Operator token</label> "
    "<input id=token name=token type=password autocomplete=off required> "
    "<button type=submit>Sign in</button></form></body></html>"
)


def load_or_create_token(path: Path) -> str:
    """The operator's token, made on first use (readable by its owner only)."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


class Sessions:
    """Signed-in operators' sessions (in memory: a restart signs everyone out) and the
    addresses locked out after wrong tokens."""

    def __init__(self, token: str, clock: Any = time.monotonic) -> None:
        self._token, self._clock = token, clock
        self._seen: dict[str, float] = {}
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def sign_in(self, offered: str, address: str) -> str | None:
        """A new session for the right token from an address not locked out."""
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < LOCKOUT_SECONDS]
            if len(recent) >= FAILURES_BEFORE_LOCKOUT:
                self._failures[address] = recent
                return None
            if not hmac.compare_digest(offered.encode(), self._token.encode()):
                self._failures[address] = [*recent, now]
                return None
            self._failures.pop(address, None)
            session = secrets.token_urlsafe(32)
            self._seen[session] = now
            return session

    def valid(self, session: str | None) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(session or "")
            if seen is None or now - seen > IDLE_SECONDS:
                self._seen.pop(session or "", None)
                return False
            self._seen[session or ""] = now
            return True

    def sign_out(self, session: str | None) -> None:
        with self._lock:
            self._seen.pop(session or "", None)


class CodecServer:
    def __init__(
        self,
        codec: EncryptionCodec,
        token: str,
        port: int,
        ui_origin: str,
        host: str = "127.0.0.1",
    ) -> None:
        self.codec, self.ui_origin = codec, ui_origin
        self.sessions = Sessions(token)
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

        def _session(self) -> str | None:
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            return cookie[COOKIE].value if COOKIE in cookie else None

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
                signed_in = server.sessions.valid(self._session())
                self._page(
                    HTTPStatus.OK,
                    "Signed in: the Web UI can read payloads (turn on its codec setting "
                    "'Include cross-origin credentials')."
                    if signed_in
                    else "Sign in to let the Web UI read payloads in this browser.",
                )
                return
            self._answer(HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            path = self._path()
            length = int(self.headers.get("Content-Length") or 0)
            if path == "/signin":
                self._sign_in(self.rfile.read(min(length, _FORM_LIMIT)))
                return
            if path == "/signout":
                server.sessions.sign_out(self._session())
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly")
                self.send_header("Location", "/signin")
                self.end_headers()
                return
            if path not in ("/decode", "/encode"):
                self._answer(HTTPStatus.NOT_FOUND)
                return
            if not server.sessions.valid(self._session()):
                self._answer(HTTPStatus.UNAUTHORIZED)
                return
            try:
                answer = server.transform(path.strip("/"), self.rfile.read(length))
            except (json_format.ParseError, KeyFileError, InvalidTag, ValueError):
                self._answer(HTTPStatus.BAD_REQUEST)
                return
            self._answer(HTTPStatus.OK, answer, "application/json")

        def _sign_in(self, form: bytes) -> None:
            offered = parse_qs(form.decode("utf-8", "replace")).get("token", [""])[0]
            session = server.sessions.sign_in(offered, self.client_address[0])
            if session is None:
                log.warning("codec_sign_in_refused")
                self._page(
                    HTTPStatus.UNAUTHORIZED, "Not signed in: wrong token, or too many tries."
                )
                return
            log.info("codec_signed_in")
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header(
                "Set-Cookie",
                f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={IDLE_SECONDS}",
            )
            self.send_header("Location", "/signin")
            self._security()
            self.end_headers()

    return Handler
