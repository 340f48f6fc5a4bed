"""PHI never leaves the process readable: payloads are sealed with AES-GCM (key id in the
metadata, several keys for rotation), and IDs and search attributes are opaque."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.testing import WorkflowEnvironment

from clinical.phases import Phase
from infra.codec import ENCODING, KEY_ID, EncryptionCodec, KeyFileError, KeyRing
from tests.support import TEST_KEYS, clinic, drive_journey, make_enrolment

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
            handle = await c.enrol(enrolment)
            status, _ = await drive_journey(
                env, handle, until=lambda s: s.phase == Phase.intensive and s.week >= 1
            )
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
