"""The codec server: lets an authorised operator read sealed payloads in the Temporal Web UI.

The UI posts payloads to `<endpoint>/decode` (and `/encode`) in Temporal's JSON form; the
endpoint carries the operator's token in its path (`/t/<token>`), since the UI sends no
credentials of its own to a codec endpoint. It listens on loopback only, unless told to
listen on a container's interfaces (whose port is then published on the host's loopback
only). Nothing is logged but the count of payloads (never their content)."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from infra.codec import EncryptionCodec, KeyFileError
from infra.files import write_private
from infra.logging import get_logger

log = get_logger("carepath.codec_server")


def load_or_create_token(path: Path) -> str:
    """The operator's token, made on first use (readable by its owner only)."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


class CodecServer:
    def __init__(
        self,
        codec: EncryptionCodec,
        token: str,
        port: int,
        ui_origin: str,
        host: str = "127.0.0.1",
    ) -> None:
        self.codec, self.token, self.ui_origin = codec, token, ui_origin
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/t/{self.token}"

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
            pass  # requests are counted in transform(); paths carry the token

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", server.ui_origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "content-type, x-namespace")
            self.send_header("Access-Control-Allow-Credentials", "true")

        def _operation(self) -> str | None:
            # The UI adds query parameters (e.g. preserveStorageRefs): the path alone decides.
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "t" or parts[2] not in ("encode", "decode"):
                return None
            if not hmac.compare_digest(parts[1].encode(), server.token.encode()):
                return None
            return parts[2]

        def do_OPTIONS(self) -> None:
            self.send_response(HTTPStatus.NO_CONTENT)
            self._cors()
            self.end_headers()

        def do_POST(self) -> None:
            operation = self._operation()
            if operation is None:
                self.send_response(HTTPStatus.FORBIDDEN)
                self._cors()
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                answer = server.transform(operation, self.rfile.read(length))
            except (json_format.ParseError, KeyFileError, InvalidTag, ValueError):
                self.send_response(HTTPStatus.BAD_REQUEST)
                self._cors()
                self.end_headers()
                return
            self.send_response(HTTPStatus.OK)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler
