"""CarePath's own files are private: the store holds names, birth dates and phone numbers,
the key file the keys to every payload. Directories CarePath makes are 0700 and files 0600;
a directory that exists already (someone's choice, or /tmp) is left as it is."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path`, made readable by its owner only if CarePath makes it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """`path`, created empty and readable by its owner only if it does not exist (SQLite
    then keeps that mode, and gives it to its journal files)."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    return path


def write_private(path: Path, text: str) -> None:
    """A secret file, readable by its owner only."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
