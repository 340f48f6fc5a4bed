"""Fuzzing the files people hand CarePath: enrolment files and program protocols. Whatever
is in them, the answer is the thing itself or one line naming the problem; nothing else."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.common import CliError
from cli.enrolment import load_enrolment
from clinical.protocol import ProtocolError, load_protocol
from tests.support import PROGRAMS, enrolment_data

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, (*prefix, k))] or [prefix]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*prefix, i))] or [prefix]
    return [prefix]


def replaced(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = replaced(document[head], tuple(rest), new)
    return copy


def one_line(message: str) -> None:
    assert message.strip() and "\n" not in message.strip(), message


@FUZZ
@given(document=json_values)
def test_any_json_as_an_enrolment_is_refused_in_one_line(
    tmp_path_factory: Any, document: Any
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "enrolment.json"
    path.write_text(json.dumps(document))
    try:
        load_enrolment(path)
    except CliError as refusal:
        one_line(str(refusal))


@FUZZ
@given(data=st.data(), new=json_values)
def test_a_valid_enrolment_with_one_value_changed(
    tmp_path_factory: Any, data: Any, new: Any
) -> None:
    document = enrolment_data()
    path_in_doc = data.draw(st.sampled_from(leaf_paths(document)))
    path = tmp_path_factory.mktemp("fuzz") / "enrolment.json"
    path.write_text(json.dumps(replaced(document, path_in_doc, new)))
    try:
        enrolment = load_enrolment(path)
    except CliError as refusal:
        one_line(str(refusal))
    else:
        assert enrolment.patient_id.startswith("P-")


DEFAULT_PROGRAM = tomllib.loads((PROGRAMS / "default-iop.toml").read_text())
toml_values = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.text(max_size=12)
    | st.lists(st.integers(-5, 400), max_size=5)
)


def toml_text(value: Any) -> str:
    """A TOML rendering good enough for the fuzzer's documents (tables, arrays, scalars)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return (
                "{ " + ", ".join(f"{json.dumps(str(k))} = {scalar(x)}" for k, x in v.items()) + " }"
            )
        return json.dumps(str(v))

    for key, v in value.items():
        if not isinstance(v, dict):
            lines.append(f"{json.dumps(str(key))} = {scalar(v)}")
    for key, v in value.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(str(key))}]")
            lines += [f"{json.dumps(str(k))} = {scalar(x)}" for k, x in v.items() if x is not None]
    return "\n".join(lines) + "\n"


@FUZZ
@given(data=st.data(), new=toml_values)
def test_a_program_with_one_value_changed_loads_or_is_refused_in_one_line(
    tmp_path_factory: Any, data: Any, new: Any
) -> None:
    path_in_doc = data.draw(st.sampled_from(leaf_paths(DEFAULT_PROGRAM)))
    document = replaced(DEFAULT_PROGRAM, path_in_doc, new)
    path = tmp_path_factory.mktemp("fuzz") / "fuzzed.toml"
    path.write_text(toml_text(document))
    try:
        load_protocol(path)
    except ProtocolError as refusal:
        one_line(str(refusal))
        assert str(refusal).startswith("fuzzed.toml")


def test_the_fuzzer_renders_the_real_program_faithfully(tmp_path: Path) -> None:
    path = tmp_path / "default-iop.toml"
    path.write_text(toml_text(DEFAULT_PROGRAM))
    assert load_protocol(path) == load_protocol(PROGRAMS / "default-iop.toml")
