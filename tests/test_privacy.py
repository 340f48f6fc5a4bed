"""PHI never leaves the process readable: payloads are sealed with AES-GCM (key id in the
metadata, several keys for rotation), and IDs and search attributes are opaque."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.testing import WorkflowEnvironment

from infra.codec import ENCODING, KEY_ID, EncryptionCodec, KeyFileError, KeyRing
from infra.codec_server import CodecServer, console_operators
from tests.console_support import store_only_console
from tests.support import TEST_KEYS, clinic, in_intensive_week, make_enrolment
from web.security import SESSION_COOKIE

PHI = ("Avery", "Quinlan", "555 010 2030", "1988-04-02")


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def test_sealed_payloads_open_only_with_their_key_and_are_never_plain() -> None:
    codec = EncryptionCodec(TEST_KEYS)
    (sealed,) = asyncio.run(codec.encode([payload('{"family_name": "Quinlan"}')]))
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == TEST_KEYS.active.encode()
    assert b"Quinlan" not in sealed.SerializeToString()
    (opened,) = asyncio.run(codec.decode([sealed]))
    assert opened.data == b'{"family_name": "Quinlan"}'
    # Two seals of the same payload differ (a fresh nonce each time).
    assert asyncio.run(codec.encode([payload("x")]))[0].data != codec.seal([payload("x")])[0].data
    # Tampering is detected.
    broken = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(InvalidTag):
        codec.open([broken])
    # Histories recorded before encryption pass through.
    assert codec.open([payload("plain")])[0].data == b"plain"


def test_rotation_keeps_old_payloads_readable(tmp_path: Path) -> None:
    old = KeyRing.create_new("2026-a")
    sealed = EncryptionCodec(old).seal([payload("before rotation")])
    rotated = old.rotated("2026-b")
    codec = EncryptionCodec(rotated)
    assert codec.open(sealed)[0].data == b"before rotation"
    assert codec.seal([payload("after")])[0].metadata[KEY_ID] == b"2026-b"
    with pytest.raises(KeyFileError, match="lacks"):
        EncryptionCodec(KeyRing.create_new("other")).open(sealed)
    # Key files: made once, shared by processes that start together, refused when broken.
    path = tmp_path / "keys.json"
    first = KeyRing.load_or_create(path)
    assert KeyRing.load_or_create(path) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text('{"active": "x", "keys": {"x": "c2hvcnQ="}}')
    with pytest.raises(KeyFileError, match="32 bytes"):
        KeyRing.load(path)


async def test_the_servers_history_holds_no_readable_phi(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, status, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(1))
            raw = await env.client.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace=env.client.namespace,
                    execution=WorkflowExecution(workflow_id=handle.id),
                )
            )
    wire = raw.SerializeToString()
    assert status.patient_id == enrolment.patient_id  # the journey itself reads it fine
    assert enrolment.contact.family_name == "Quinlan"
    for secret in PHI:
        assert secret.encode() not in wire, secret
    assert ENCODING in wire  # sealed payloads are there
    # Workflow IDs are opaque.
    assert handle.id == f"journey-{enrolment.patient_id}"


async def test_the_codec_server_opens_payloads_only_for_an_operator_signed_in_at_the_console(
    tmp_path: Path,
) -> None:
    """No secret in any URL, no token of its own: only a request carrying the console's
    session cookie of an operator is decoded, and each decode is in the access log."""
    async with store_only_console(tmp_path) as ui:
        identity, clock = ui.console.identity, ui.clock
        operator, audit = console_operators(identity, ui.console.access, ui.console.idle, clock)
        codec = EncryptionCodec(TEST_KEYS)
        server = CodecServer(codec, operator, audit, 0, "http://127.0.0.1:8233")
        server.serve_in_background()
        base = f"http://127.0.0.1:{server.port}"

        def call(path: str, data: bytes, session: str | None = None) -> tuple[int, bytes, Any]:
            request = urllib.request.Request(f"{base}{path}", data=data, method="POST")
            request.add_header("Content-Type", "application/json")
            if session:
                request.add_header("Cookie", f"{SESSION_COOKIE}={session}")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read(), response.headers
            except urllib.error.HTTPError as err:
                return err.code, err.read(), err.headers

        ops = identity.open_session("ops", "127.0.0.1", clock())
        case_manager = identity.open_session("cm1", "127.0.0.1", clock())
        try:
            sealed = codec.seal([payload('{"phone": "+1 555 010 2030"}')])
            body = json_format.MessageToJson(Payloads(payloads=sealed)).encode()
            # Anyone who reaches the UI, or a case manager's session: no payloads.
            assert call("/decode", body)[0] == 401
            assert call("/decode", body, case_manager)[0] == 401
            assert call("/decode", body, "a-guessed-session")[0] == 401
            # The Web UI adds query parameters to the codec calls.
            status, answer, headers = call("/decode?preserveStorageRefs=true", body, ops)
            assert status == 200
            assert headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8233"
            assert headers["Access-Control-Allow-Credentials"] == "true"
            (opened,) = json_format.Parse(answer, Payloads()).payloads
            assert opened.data == b'{"phone": "+1 555 010 2030"}'
            assert call("/decrypt", body, ops)[0] == 404
            assert call("/decode", b"{not json", ops)[0] == 400
            status, answer, _ = call(
                "/encode",
                json_format.MessageToJson(Payloads(payloads=[payload("x")])).encode(),
                ops,
            )
            assert status == 200
            (resealed,) = json_format.Parse(answer, Payloads()).payloads
            assert resealed.metadata["encoding"] == ENCODING
            # The console's idle sign-out (and sign-out) ends the codec's access too.
            clock.advance(ui.console.idle + timedelta(seconds=1))
            assert call("/decode", body, ops)[0] == 401
        finally:
            server.close()
        read = [(e.actor, e.action) for e in ui.console.access.search()]
    assert read.count(("ops", "decode payloads")) == 1
    assert ("ops", "encode payloads") in read


def test_the_embedded_servers_ui_is_told_no_secret(tmp_path: Path) -> None:
    from cli.admin import codec_endpoint
    from infra.settings import load_settings

    settings = load_settings({"CAREPATH_DATA_DIR": str(tmp_path)})
    assert codec_endpoint(settings) == f"http://127.0.0.1:{settings.codec_port}"
