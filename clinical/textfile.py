"""Reading a file a person hands CarePath (an enrolment, a program, the sites, a key ring):
bounded in size and shape, with one line for whatever is wrong. A directory, a device that
never ends, a multi-megabyte file or bytes that are not UTF-8 are refused, never read."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1 << 20
"""A program, the sites file or a key ring: far larger than any real one."""


class FileRefused(ValueError):
    """A file CarePath will not read: the message is one line naming it and why."""


def read_text_file(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """The text of the regular file at `path` (UTF-8, at most `limit` bytes)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileRefused(f"{path}: no such file") from None
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{path}: is not a regular file ({what} is read from a file)")
    if info.st_size > limit:
        raise FileRefused(f"{path.name}: {info.st_size:,} bytes; {what} is at most {limit:,}")
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise FileRefused(f"{path.name}: more than {limit:,} bytes; {what} is at most that")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{path.name}: not UTF-8 text (byte {exc.start})") from None


def read_toml_file(path: Path, what: str) -> dict[str, Any]:
    """The tables of a TOML file read as `read_text_file` reads it."""
    try:
        return tomllib.loads(read_text_file(path, what))
    except tomllib.TOMLDecodeError as exc:
        raise FileRefused(f"{path.name}: not valid TOML ({exc})") from None
