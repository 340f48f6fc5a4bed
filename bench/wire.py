"""A lean HTTP/1.1 client for benchmark 7's senders: a few keep-alive connections to one
host, each request written in one piece and its answer read by its Content-Length.

Why not httpx: the sender stands in for another system (an EHR on its own machine) but runs
on the two cores it measures. httpx spent about 1.5 ms of CPU a request there, as much as
the API process itself, where the bare reference's sender (the Temporal client, its core in
Rust) spends about 0.4 ms a signal. This spends a few tenths of a millisecond, so the rate
measured is the API's, not its sender's. Benchmarks only: it speaks just enough HTTP for
uvicorn's answers (no chunked bodies, no redirects, no TLS)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
TIMEOUT = 30.0  # seconds for an answer, as the httpx client had


def _head(raw: bytes) -> tuple[str, dict[str, str]]:
    """The status line and the header fields (lower-cased names) of an answer's head."""
    status_line, *fields = raw.decode("latin-1").split("\r\n")
    named = (field.partition(":") for field in fields if field)
    return status_line, {name.strip().lower(): value.strip() for name, _, value in named}


class Wire:
    """`size` keep-alive connections to `base` (http://host:port), each used by one
    request at a time."""

    def __init__(self, base: str, size: int) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.size = size
        # A free slot holds its open connection, or None once one was dropped (the next
        # request on that slot opens another).
        self._free: asyncio.Queue[Connection | None] = asyncio.Queue()
        self._all: list[asyncio.StreamWriter] = []

    async def _open(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._all.append(writer)
        return reader, writer

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        reader, writer = await self._free.get() or await self._open()
        lines = [
            f"POST {path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        kept = False
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            async with asyncio.timeout(TIMEOUT):
                status_line, fields = _head(await reader.readuntil(b"\r\n\r\n"))
                answer = Answer(
                    int(status_line.split(" ", 2)[1]),
                    await reader.readexactly(int(fields.get("content-length", "0"))),
                )
            kept = fields.get("connection", "").lower() != "close"
            return answer
        finally:
            # A closed, broken or timed-out exchange leaves the connection unusable.
            if not kept:
                writer.close()
            self._free.put_nowait((reader, writer) if kept else None)

    async def fill(self) -> None:
        """Every slot's connection opened now, before anything is timed."""
        for _ in range(self.size):
            self._free.put_nowait(await self._open())

    def close(self) -> None:
        for writer in self._all:
            writer.close()


@asynccontextmanager
async def wire(base: str, size: int) -> AsyncIterator[Wire]:
    """A `Wire` with its connections open; all closed on the way out."""
    pool = Wire(base, size)
    try:
        await pool.fill()
        yield pool
    finally:
        pool.close()
