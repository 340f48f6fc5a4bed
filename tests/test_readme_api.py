"""The README's "a patient from enrolment to discharge with curl alone" runs: its block is
parsed (the API client it makes, then each curl call: method, path, headers, body) and the
same HTTP calls are made, in order, to the application in-process with a worker on the
time-skipping server. The clinic's time passes where a clinic's would (the week's sessions
happen before their attendance sheet), and the patient's written consent to the client comes
before its FHIR export (a disclosure). A README whose calls no longer work fails here."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from infra.settings import PROJECT_ROOT
from tests.console_support import make_console
from tests.support import clinic, drive_journey, enrolment_data
from workflows.patient_journey import PatientJourneyWorkflow

README_PATIENT = "P-KXJQP7W8"  # the README's example patient, replaced by the test's own


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # under the API's root, with its query
    headers: dict[str, str]
    body: str | None  # "@file" for a file's contents


def readme_block() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    after = readme.split("with `curl` alone")[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def client_of(block: str) -> tuple[str, str, str]:
    """The API client the block makes: name, site, scopes."""
    command = " ".join(block.replace("\\\n", " ").split())
    found = re.search(r"api-clients add (\S+) --site (\S+) --scopes (\S+)", command)
    assert found, "the block makes its API client with starter.py api-clients add"
    return found[1], found[2], found[3]


def calls_of(block: str, token: str) -> list[Call]:
    """Each curl command of the block as the shell would run it (variables set as the
    block sets them), up to a pipe or redirection."""
    variables = {
        "API": "",
        "TOKEN": token,
        "AUTH": f"Authorization: Bearer {token}",
        "JSON": "Content-Type: application/json",
    }
    calls = []
    for line in _commands(block):
        if not line.startswith("curl "):
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        words = shlex.split(line, comments=True)[1:]
        method, headers, body, url = None, {}, None, None
        while words:
            word = words.pop(0)
            if word in ("|", ">"):
                break
            if word == "-s":
                continue
            if word == "-X":
                method = words.pop(0)
            elif word == "-H":
                name, _, value = words.pop(0).partition(": ")
                headers[name] = value
            elif word in ("-d", "--data"):
                body = words.pop(0)
            else:
                assert url is None, f"one URL a call: {line}"
                url = word
        assert url is not None, line
        method = method or ("POST" if body is not None else "GET")
        calls.append(Call(method, url, headers, body))
    return calls


def _commands(block: str) -> list[str]:
    """The block's shell commands: continued lines joined, quoted newlines kept."""
    commands, pending = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        commands.append(pending.strip())
        pending = ""
    return commands


async def test_the_readme_curl_sequence_drives_a_patient_from_enrolment_to_discharge(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    block = readme_block()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            ui = make_console(c.settings, c.store, c.client)
            name, site, scopes = client_of(block)
            _, token = ui.console.clients.add(name, scopes, site, ui.clock())
            calls = calls_of(block, token)
            enrolment = enrolment_data()
            pid = enrolment["patient_id"]
            files = {"@patient.json": json.dumps(enrolment)}
            answers: list[tuple[Call, int, Any]] = []
            async with ui.signed_in(None) as http:
                for call in calls:
                    path = "/api/v1" + call.path.replace(README_PATIENT, pid)
                    body = call.body and files.get(call.body, call.body)
                    if path.endswith("/attendance"):
                        marked = {m["session_id"] for m in json.loads(body or "{}")["marks"]}
                        handle = c.client.get_workflow_handle(f"journey-{pid}")
                        await drive_journey(  # the sessions happen before their sheet
                            env,
                            handle,
                            until=lambda s, marked=marked: (
                                marked
                                <= {x.session_id for x in s.sessions if x.day <= s.program_day}
                            ),
                            choose=lambda n: "none",
                        )
                    answer = await http.request(
                        call.method,
                        path,
                        headers=call.headers,
                        content=body.encode() if body else None,
                    )
                    answers.append((call, answer.status_code, answer.text))
                    while path.endswith("/patients") and c.store.patient(pid) is None:
                        await asyncio.sleep(0.05)  # the intake lands (a person types slower)
            handle = c.client.get_workflow_handle(f"journey-{pid}")
            status = await handle.query(PatientJourneyWorkflow.status)
    failed = [
        (call.method, call.path, code, text[:200]) for call, code, text in answers if code >= 300
    ]
    assert not failed, failed
    assert len(answers) >= 8
    assert {a[0].method for a in answers} == {"GET", "POST"}
    assert status.phase.is_terminal, status.phase
    # The patient's written consent to the client, then the journey as a FHIR Bundle.
    paths = [call.path for call, _, _ in answers]
    consented = paths.index(f"/patients/{README_PATIENT}/consents")
    assert paths.index(f"/patients/{README_PATIENT}/fhir") > consented
    (bundle,) = [text for call, _, text in answers if call.path.endswith("/fhir")]
    assert json.loads(bundle)["resourceType"] == "Bundle"
    attended = [s for s in status.sessions if s.status.value == "attended"]
    assert attended, "the README's attendance sheet is on the journey"
