"""Classes of fault found by trying CarePath as a new user and as an adversary would, each
closed as a class: identifiers that are not what they seem, what the door accepts but the
store would refuse, PHI in failure messages, files that are not files, data that cannot be
true, files readable by others, keys a client invents."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from activities.records import IntakeRecord
from clinical.assessment import (
    EMAIL_MAX,
    NAME_MAX,
    PHONE_MAX,
    Enrolment,
    PatientContact,
    check_plausible,
)
from clinical.careplan import plan_care
from clinical.identifiers import CaseManagerId, PatientId, ProgramId, SiteId
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog, ProtocolError
from clinical.textfile import FileRefused, read_text_file
from infra.codec import EncryptionCodec, KeyFileError, KeyRing
from infra.files import private_dir
from infra.settings import SettingsError, load_settings
from infra.store import CareStore, NewPatient, StoreRefused
from infra.temporal import converter_for
from tests.support import PROGRAMS, TEST_KEYS, enrolment_data, make_enrolment, run_starter

# --- 1. identifiers are what they seem, whole ------------------------------------------------

IDENTIFIERS: list[tuple[Any, str]] = [
    (PatientId, "P-7K2M9Q4D"),
    (CaseManagerId, "CM-01"),
    (SiteId, "north"),
    (ProgramId, "default-iop"),
]
# Around a valid identifier: what a file, a terminal or a copy-paste can add.
DECORATIONS = ["\n", "\r\n", " ", "\t", "\x00", "\u200b", "\ufeff", "\u00a0", "\u2028"]


@pytest.mark.parametrize(("kind", "good"), IDENTIFIERS, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("extra", DECORATIONS, ids=repr)
def test_an_identifier_with_anything_around_it_is_refused(kind: Any, good: str, extra: str) -> None:
    adapter = TypeAdapter(kind)
    assert adapter.validate_python(good) == good
    for bad in (good + extra, extra + good, good[:3] + extra + good[3:]):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=14))
def test_a_patient_id_is_only_ever_the_canonical_form(text: str) -> None:
    """Whatever passes is `P-` and eight Crockford characters with two digits, exactly as
    given: no second spelling of the same patient (case, width, other scripts) passes."""
    try:
        value = TypeAdapter(PatientId).validate_python(text)
    except ValidationError:
        return
    assert value == text and len(value) == 10 and value.isascii() and value == value.upper()


# Fullwidth D, lower case, Cyrillic Ka, Arabic-Indic four: the same ID to a reader's eye.
@pytest.mark.parametrize(
    "confusable", ["P-7K2M9Q4\uff24", "p-7k2m9q4d", "P-7\u041a2M9Q4D", "P-7K2M9Q4\u0664"]
)
def test_look_alike_patient_ids_are_refused(confusable: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(PatientId).validate_python(confusable)


def test_an_enrolment_file_with_a_padded_patient_id_is_refused(tmp_path: Path) -> None:
    data = enrolment_data()
    data["patient_id"] += "\n"
    result = _cli(tmp_path, "enrol", _write(tmp_path, "padded.json", data))
    assert result.returncode == 2 and "patient_id" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("site", ["nörth", "north\n", "NORTH", "no'rth", "n²"])
def test_a_search_filter_takes_only_a_site_identifier(site: str) -> None:
    from cli.common import CliError
    from cli.operators import visibility_query

    with pytest.raises(CliError, match=r"^site: "):
        visibility_query(site=site)


# --- 2. what the door accepts, the store holds ------------------------------------------------


def test_the_stores_columns_are_sized_from_the_enrolments_limits(tmp_path: Path) -> None:
    """Each contact column holds the sealed form of the longest value the door accepts."""
    from sqlalchemy import inspect

    from infra.sealed import sealed_length

    store = CareStore(f"sqlite:///{tmp_path / 'care.db'}")
    store.migrate()
    columns = {c["name"]: c["type"] for c in inspect(store.engine).get_columns("patients")}
    store.dispose()
    lengths = {n: getattr(columns[n], "length", None) for n in ("given_name", "family_name")}
    assert lengths == dict.fromkeys(lengths, sealed_length(NAME_MAX))
    assert getattr(columns["email"], "length", None) == sealed_length(EMAIL_MAX)
    assert getattr(columns["phone"], "length", None) == sealed_length(PHONE_MAX)


def _longest_contact() -> dict[str, Any]:
    data = enrolment_data()
    data["contact"] = {
        "given_name": "A" * NAME_MAX,
        "family_name": "B" * NAME_MAX,
        "date_of_birth": "1980-02-29",
        "phone": "+" + "1" * (PHONE_MAX - 1),
        "email": "x" * (EMAIL_MAX - 6) + "@ex.io",
    }
    return data


def test_the_longest_enrolment_the_door_accepts_is_written_on_every_store(
    database_url: str,
) -> None:
    from activities.care_operations import CareOperations
    from simulation.partners import SimulatedPartners
    from simulation.telephony import SimulatedTelephony

    enrolment = Enrolment.model_validate(_longest_contact())
    too_long = _longest_contact()
    too_long["contact"]["email"] = "x" + too_long["contact"]["email"]
    with pytest.raises(ValidationError, match="email"):
        Enrolment.model_validate(too_long)
    store = CareStore(database_url, keys=TEST_KEYS)
    store.migrate()
    try:
        catalog = ProgramCatalog(PROGRAMS)
        protocol = catalog.load(enrolment.program_id)
        placement = place_enrolment(enrolment, protocol)
        plan = plan_care(enrolment.assessment, placement, protocol)
        ops = CareOperations(store, catalog, SimulatedTelephony(store), SimulatedPartners(store))
        record = IntakeRecord(
            enrolment=enrolment,
            placement=placement,
            plan=plan,
            risk="moderate",
            at=datetime(2027, 1, 4, tzinfo=UTC),
        )
        assert ops.record_intake(record) is True
        assert store.patient_phone(enrolment.patient_id) == enrolment.contact.phone
        # At rest, sealed: what the database holds names no one.
        with store.engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT given_name, email, assessment_json FROM patients")
            at_rest = " ".join(str(v) for v in raw.one())
        assert at_rest.startswith("sealed1:") and "AAAA" not in at_rest and "xxxx" not in at_rest
    finally:
        store.dispose()


# --- 3. no PHI in a failure's message ---------------------------------------------------------


def refuse_new_patients(store: CareStore) -> None:
    """The database refuses every new patient row, as a constraint it enforces would."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON patients "
                "BEGIN SELECT RAISE(ABORT, 'the patients table takes no rows'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'the patients table takes no rows' USING ERRCODE = '23514'; "
                "END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON patients "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )


def new_patient(contact: PatientContact | None = None) -> NewPatient:
    """P-7K2M9Q4D, enrolled in intake, as a worker records them."""
    return NewPatient(
        patient_id="P-7K2M9Q4D",
        case_manager_id="CM-01",
        site_id="north",
        program_id="default-iop",
        enrolled_at=datetime(2027, 1, 4, tzinfo=UTC),
        level="2.1",
        risk="moderate",
        contact=contact or PHI_CONTACT,
        assessment_json="{}",
        care_plan_json="{}",
    )


PHI_CONTACT = PatientContact(
    given_name="Avery",
    family_name="Quinlan",
    date_of_birth=date(1988, 4, 2),
    phone="+1 555 010 2030",
    email="avery.quinlan@example.org",
)


def test_a_failed_store_write_names_no_value_of_the_row(database_url: str, caplog: Any) -> None:
    store = CareStore(database_url)
    store.migrate()
    caplog.set_level(logging.DEBUG)
    try:
        refuse_new_patients(store)
        with pytest.raises(StoreRefused) as failed:
            store.record_intake(new_patient(), audit=[], consents=[])
    finally:
        store.dispose()
    assert "takes no rows" in str(failed.value)
    text = str(failed.value) + repr(failed.value) + caplog.text
    for phi in ("Avery", "Quinlan", "1988-04-02", "555 010"):
        assert phi not in text, phi


# --- 7. files that are not files ------------------------------------------------------------


def test_what_is_not_a_small_text_file_is_refused_in_one_line(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (2 << 20) + '"}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    cases = [
        (tmp_path, "is a directory"),
        (Path("/dev/zero"), "is not a regular file"),
        (big, "bytes; an enrolment is at most"),
        (binary, "not UTF-8"),
        (tmp_path / "missing.json", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(FileRefused, match=message):
            read_text_file(path, "an enrolment", 64 * 1024)
    for path, message in cases[:3]:
        result = _cli(tmp_path, "enrol", str(path))
        assert result.returncode == 2, result.stderr
        assert message.split(";")[0] in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_program_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "odd.toml").mkdir()
    with pytest.raises(ProtocolError, match="is a directory"):
        ProgramCatalog(tmp_path).load("odd")


def test_a_deeply_nested_enrolment_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = _cli(tmp_path, "enrol", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- 8. data that cannot be true ---------------------------------------------------------------

TODAY = date(2027, 3, 10)


def _with(**contact_or_assessment: Any) -> Enrolment:
    data = enrolment_data()
    for key, value in contact_or_assessment.items():
        section = "contact" if key == "date_of_birth" else "assessment"
        data[section][key] = value
    return Enrolment.model_validate(data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"date_of_birth": "2027-03-11"}, "contact.date_of_birth: 2027-03-11 is in the future"),
        ({"date_of_birth": "1910-01-01"}, "makes the patient 117"),
        (
            {"date_of_birth": "1947-01-01", "age_group": "adolescent"},
            "assessment.age_group: adolescent, but",
        ),
        ({"date_of_birth": "2021-01-01", "age_group": "adult"}, "assessment.age_group: adult"),
    ],
)
def test_an_enrolment_that_cannot_be_true_is_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_plausible(_with(**fields), TODAY)


def test_plausible_enrolments_pass_on_their_day() -> None:
    check_plausible(_with(date_of_birth="2011-03-10", age_group="adolescent"), TODAY)  # 16
    check_plausible(_with(date_of_birth="2009-03-10", age_group="adult"), TODAY)  # 18 today
    check_plausible(make_enrolment(), TODAY)


def test_repeated_or_countless_commitments_are_refused() -> None:
    work = {"weekday": "tue", "start": "08:00", "end": "17:00", "kind": "work"}
    with pytest.raises(ValidationError, match="listed twice"):
        make_enrolment(commitments=[work, dict(work)])
    many = [
        {"weekday": d, "start": f"{h:02d}:00", "end": f"{h:02d}:30"}
        for d in ("mon", "tue", "wed", "thu")
        for h in range(6, 12)
    ]
    with pytest.raises(ValidationError, match="commitments"):
        make_enrolment(commitments=many)


def test_an_impossible_enrolment_is_refused_at_the_command_line(tmp_path: Path) -> None:
    data = enrolment_data()
    data["contact"]["date_of_birth"] = "2999-01-01"
    result = _cli(tmp_path, "enrol", _write(tmp_path, "future.json", data))
    assert result.returncode == 2, result.stderr
    assert "contact.date_of_birth: 2999-01-01 is in the future" in result.stderr


# --- 9. CarePath's files are private ------------------------------------------------------------


def test_the_store_and_data_directory_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = CareStore(f"sqlite:///{data / 'carepath.db'}")
    store.migrate()
    store.dispose()
    assert stat.S_IMODE((data / "carepath.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # A directory that exists already is someone's choice: left as it is.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 10. keys are never invented by a client ---------------------------------------------------


def test_a_client_never_makes_a_key_file(tmp_path: Path) -> None:
    settings_ = load_settings({"CAREPATH_DATA_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match=f"no payload key file at {tmp_path}"):
        converter_for(settings_)
    assert not (tmp_path / "keys.json").exists()
    converter_for(settings_, make_keys=True)  # a worker makes it
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    converter_for(settings_)  # and a client reads it


async def test_a_payload_sealed_with_a_key_this_process_lacks_names_the_key(
    caplog: Any,
) -> None:
    ours, theirs = KeyRing.create_new("k-ours"), KeyRing.create_new("k-theirs")
    sealed = await EncryptionCodec(theirs).encode([_payload()])
    caplog.set_level(logging.ERROR, logger="carepath.codec")
    for _ in range(3):
        with pytest.raises(KeyFileError, match="key 'k-theirs'"):
            await EncryptionCodec(ours).decode(sealed)
    assert caplog.text.count("k-theirs") == 1, "logged once, not at every retry"


def test_a_client_with_another_data_directory_stops_before_enrolling(tmp_path: Path) -> None:
    result = _cli(tmp_path, "enrol", "--generate")
    assert result.returncode == 2, result.stderr
    assert "no payload key file" in result.stderr
    assert not (tmp_path / "keys.json").exists()


# --- helpers -----------------------------------------------------------------------------------


def _payload() -> Any:
    from temporalio.api.common.v1 import Payload

    return Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')


def _write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAREPATH_DATA_DIR": str(tmp_path), "CAREPATH_SERVER_PORT": "1"}
    return run_starter(env, *args)


# --- 2. a write the store still refuses surfaces; it is not retried forever ----------------------


def test_a_value_the_database_cannot_hold_is_refused_once_without_the_value(
    database_url: str,
) -> None:
    store = CareStore(database_url)
    store.migrate()
    # Past the door's limit (a contact built without its checks): longer than the column.
    secret = "avery.quinlan@" + "x" * 2000 + ".example"
    contact = PatientContact.model_construct(**{**PHI_CONTACT.model_dump(), "email": secret})
    try:
        if database_url.startswith("sqlite"):
            # SQLite keeps any length; a trigger stands in for the database's refusal.
            refuse_new_patients(store)
        with pytest.raises(StoreRefused) as refused:
            store.record_intake(new_patient(contact), audit=[], consents=[])
        assert store.patient("P-7K2M9Q4D") is None
    finally:
        store.dispose()
    message = str(refused.value)
    assert message.startswith("the store refused the write: ")
    assert "avery" not in message and "Quinlan" not in message and "\n" not in message


async def test_a_journey_whose_write_the_store_refuses_fails_where_operators_see_it(
    env: Any, tmp_path: Path, caplog: Any, capfd: Any
) -> None:
    """...and no log line of the worker, from CarePath or any library, carries the PHI of
    the write that failed (the SDK logs the failed activity with its error)."""
    from temporalio.client import WorkflowFailureError

    from tests.support import clinic

    caplog.set_level(logging.DEBUG)
    async with clinic(env.client, tmp_path) as c:
        refuse_new_patients(c.store)
        handle = await c.enrol(make_enrolment())
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause: Any = failed.value.cause
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    assert getattr(cause, "type", None) == "StoreRefused"
    assert "the patients table takes no rows" in str(cause)
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "StoreRefused" in logs or "store refused" in logs, "the failure was logged"
    for phi in ("Avery", "Quinlan", "1988-04-02", "555 010 2030", "alcohol"):
        assert phi not in str(cause) and phi not in logs, phi


# --- 6. every numeric setting of a protocol has a range that keeps journeys workable ---------


def _numeric_fields(model: type, path: str = "") -> list[tuple[str, Any]]:
    """Every int or float field in a protocol model and the models inside it."""
    import typing

    from pydantic import BaseModel

    found: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        where = f"{path}{name}"
        for arg in [info.annotation, *typing.get_args(info.annotation)]:
            inner = typing.get_args(arg)
            for t in (arg, *inner):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    found += _numeric_fields(t, f"{where}.")
        base = info.annotation
        args = [a for a in typing.get_args(base) if a is not type(None)]
        optional = [a for a in args if typing.get_origin(a) is typing.Annotated]
        if base in (int, float) or (args and all(a in (int, float) for a in args)):
            found.append((where, info))
        elif len(args) == 1 and optional and typing.get_args(optional[0])[0] in (int, float):
            found.append((where, optional[0]))  # `Annotated[float, Field(...)] | None`
        elif typing.get_origin(base) in (tuple, dict):
            element = typing.get_args(base)[-2 if typing.get_origin(base) is tuple else -1]
            bare = typing.get_args(element)
            if bare and bare[0] in (int, float):
                found.append((f"{where}[]", element))
    return found


def _bounds(info: Any) -> tuple[bool, bool]:
    """Whether a field (or an Annotated element type) has a lower and an upper bound."""
    import typing

    import annotated_types as at

    found = list(getattr(info, "metadata", []))
    for annotated in (info, *typing.get_args(getattr(info, "annotation", None))):
        found += list(getattr(annotated, "__metadata__", ()))
    flat = [m for f in found for m in (getattr(f, "metadata", None) or [f])]
    low = any(isinstance(m, at.Ge | at.Gt) for m in flat)
    high = any(isinstance(m, at.Le | at.Lt) for m in flat)
    return low, high


def test_every_numeric_protocol_setting_has_both_bounds() -> None:
    from clinical.protocol import ProgramProtocol

    fields = _numeric_fields(ProgramProtocol)
    assert len(fields) > 30, fields  # the walk found the protocol's settings
    unbounded = [name for name, info in fields if _bounds(info) != (True, True)]
    assert unbounded == []


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("[clock]\nseconds_per_day = 1e-9", "", "clock.seconds_per_day"),
        ("[schedule]\ntelehealth_distance_km = 1e12", "", "telehealth_distance_km"),
        ('[levels."2.1"]\nhours.adult = { min = 9, max = 1e9 }', "", "max"),
    ],
)
def test_a_setting_past_its_range_is_refused_naming_it(
    tmp_path: Path, section: str, value: str, field: str
) -> None:
    import shutil

    shutil.copy(PROGRAMS / "default-iop.toml", tmp_path / "default-iop.toml")
    (tmp_path / "odd-iop.toml").write_text(
        f'extends = "default-iop.toml"\n\n[program]\nid = "odd-iop"\nname = "Odd"\n\n{section}\n'
    )
    with pytest.raises(ProtocolError, match=field.split(".")[-1]):
        ProgramCatalog(tmp_path).load("odd-iop")


# --- 9. PHI sealed at rest ------------------------------------------------------------------------


def test_sealed_columns_read_back_rotate_and_name_a_missing_key(tmp_path: Path) -> None:
    from infra.sealed import seal, unseal

    old = KeyRing.create_new("k-old")
    rotated = old.rotated("k-new")
    sealed = seal("Avery Quinlan", old)
    assert sealed.startswith("sealed1:k-old:") and "Avery" not in sealed
    assert unseal(sealed, rotated) == "Avery Quinlan"  # rotation keeps the old key
    assert unseal("written in the clear before", None) == "written in the clear before"
    with pytest.raises(KeyFileError, match="key 'k-old'"):
        unseal(sealed, KeyRing.create_new("k-other"))
    # Two seals of one value differ (a fresh nonce): equal values are not visible as equal.
    assert seal("Avery", old) != seal("Avery", old)


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("session_id", "INT1-W03-S2"),
        ("meeting_id", "ALUMNI-E1-D016"),
        ("task_key", "P-7K2M9Q4D/task/outreach/E1-W03"),
    ],
)
@pytest.mark.parametrize("extra", DECORATIONS, ids=repr)
def test_the_ids_in_a_case_managers_request_are_taken_whole(
    field: str, good: str, extra: str
) -> None:
    from clinical.requests import AlumniAttendance, AttendanceReport, TaskDone

    models: dict[str, Any] = {"session_id": AttendanceReport, "meeting_id": AlumniAttendance}
    model = models.get(field, TaskDone)
    base: dict[str, Any] = {"case_manager_id": "CM-01", field: good}
    if field == "session_id":
        base["status"] = "attended"
    assert getattr(model.model_validate(base), field) == good
    for bad in (good + extra, extra + good, good.lower() if field != "task_key" else good + " "):
        with pytest.raises(ValidationError, match=field):
            model.model_validate({**base, field: bad})


@pytest.mark.parametrize(
    "args",
    [
        ["relapse", "P-7K2M9Q4D", "--ratings", "1,2,3,4,0,\u00b2", "--case-manager", "CM-01"],
        [
            "relapse",
            "P-7K2M9Q4D",
            "--ratings",
            "1,2,3,4,0," + "9" * 5000,
            "--case-manager",
            "CM-01",
        ],
        [
            "check-ins",
            "P-7K2M9Q4D",
            "--days",
            "20,\u0664\u0665",
            "--reason",
            "clinical",
            "--case-manager",
            "CM-01",
        ],
    ],
    ids=["superscript", "five-thousand-digits", "arabic-indic"],
)
def test_numbers_in_arguments_are_ascii_and_small_or_refused_in_one_line(
    tmp_path: Path, args: list[str]
) -> None:
    result = _cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
