"""Run CarePath's benchmarks on this machine, print one table, and write the figures as
JSON (bench/results/<timestamp>.json and latest.json). Benchmarks are not tests.

    .venv/bin/python -m bench                       # all five, full size (tens of minutes)
    .venv/bin/python -m bench --quick               # small sizes: a smoke run of a few minutes
    .venv/bin/python -m bench --only overhead,latency --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, raise_on_sigterm, scratch_dir

BENCHMARKS = ("overhead", "latency", "cohort", "patient_year", "memory", "console", "api")


def sizes(
    quick: bool,
    repeat: int | None,
    cohort_sizes: list[int] | None,
    cohort_workers: list[int] | None = None,
    cohort_shard_size: int | None = None,
    cohort_one_server: bool = False,
    cohort_at_once: int | None = None,
) -> dict[str, Any]:
    """Each benchmark's parameters: the issue's sizes, or small ones for a smoke run."""
    runs = repeat if repeat is not None else (1 if quick else 3)
    return {
        "overhead": {
            "patients": 40 if quick else 500,
            "repeat": runs,
            "per_second": 5.0,
            "seconds_per_day": 1.0,
        },
        "latency": {
            "active": 100 if quick else 2000,
            "measured": 20 if quick else 100,
            "rounds": runs,
            "per_round": 50 if quick else 300,
            "seconds_per_day": 20.0,
        },
        "cohort": {
            "sizes": cohort_sizes or ([10, 30] if quick else [100, 1000]),
            "workers": cohort_workers or [1],
            "shard_size": cohort_shard_size or (10 if quick else 250),
            "one_server": cohort_one_server,
            "at_once": cohort_at_once,
            "repeat": runs,
        },
        "patient_year": {"patients": 2 if quick else 5},
        "memory": {"counts": [100, 300] if quick else [1000, 5000], "small_cache": 50},
        "console": {
            "patients": 200 if quick else 2000,
            "requests": 20 if quick else 200,
            "journeys": 5 if quick else 20,
            "rounds": 20 if quick else 300,
        },
        "api": {
            "active": 100 if quick else 2000,
            "measured": 10 if quick else 100,
            "per_round": 50 if quick else 300,
            "events": 100 if quick else 1000,
            "concurrency": 10,
            "seconds_per_day": 20.0,
        },
    }


async def run_one(name: str, params: dict[str, Any], scratch: Path) -> dict[str, Any]:
    if name == "overhead":
        from bench import overhead

        return await overhead.run(
            params["patients"],
            params["repeat"],
            params["per_second"],
            params["seconds_per_day"],
            scratch,
        )
    if name == "latency":
        from bench import latency

        return await latency.run(
            params["active"],
            params["measured"],
            params["rounds"],
            params["per_round"],
            params["seconds_per_day"],
            scratch,
        )
    if name == "cohort":
        from bench import cohort

        return await cohort.run(
            params["sizes"],
            params["repeat"],
            scratch,
            params["workers"],
            params["shard_size"],
            one_server=params["one_server"],
            at_once=params["at_once"],
        )
    if name == "patient_year":
        from bench import patient_year

        return await patient_year.run(params["patients"], scratch)
    if name == "memory":
        from bench import memory
        from infra.settings import load_settings

        default = load_settings().max_cached_workflows
        return await memory.run(params["counts"], [default, params["small_cache"]], scratch)
    if name == "console":
        from bench import console

        return await console.run(
            params["patients"], params["requests"], params["journeys"], params["rounds"], scratch
        )
    if name == "api":
        from bench import api

        return await api.run(
            params["active"],
            params["measured"],
            params["per_round"],
            params["events"],
            params["concurrency"],
            params["seconds_per_day"],
            scratch,
        )
    raise ValueError(name)


def parse_only(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        named = ", ".join(unknown) or repr(value)
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {named}; choose from {', '.join(BENCHMARKS)}"
        )
    return names


def parse_sizes(value: str) -> list[int]:
    try:
        numbers = [int(n) for n in value.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"positive integers, comma-separated, not {value!r}")
    return numbers


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value!r}")
    return number


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    from cli.main import _OneLineErrors  # bad arguments: one line and exit code 2, as starter.py

    parser = _OneLineErrors(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", type=parse_only, default=list(BENCHMARKS), metavar="NAMES")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--repeat", type=positive, default=None, metavar="K")
    parser.add_argument("--cohort-sizes", type=parse_sizes, default=None, metavar="N,N")
    parser.add_argument(
        "--cohort-workers",
        type=parse_sizes,
        default=None,
        metavar="K,K",
        help="worker processes for each cohort (default 1)",
    )
    parser.add_argument(
        "--cohort-shard-size",
        type=positive,
        default=None,
        metavar="N",
        help="run cohorts above N as shards of N, each on its own server (default 250)",
    )
    parser.add_argument(
        "--cohort-at-once",
        type=positive,
        default=None,
        metavar="K",
        help="run at most K shards at a time (default: one a core)",
    )
    parser.add_argument(
        "--cohort-one-server",
        action="store_true",
        help="also run cohorts above the shard size on one server (on 2 cores, 1,000 "
        "journeys on one time-skipping server lost its connection after 25 minutes)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write(results: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2, default=str)
    path = folder / f"{stamp}.json"
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    return path


async def main(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    params = sizes(
        args.quick,
        args.repeat,
        args.cohort_sizes,
        args.cohort_workers,
        args.cohort_shard_size,
        args.cohort_one_server,
        args.cohort_at_once,
    )
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "quick": args.quick,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "parameters": {name: params[name] for name in args.only},
        "benchmarks": {},
        "failed": {},
    }
    for name in args.only:
        say(f"{name} …")
        started = time.monotonic()
        try:
            with scratch_dir(name) as scratch:
                figures = await run_one(name, params[name], scratch)
        except Exception as exc:  # one benchmark failing must not lose the others' figures
            results["failed"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results.setdefault("tracebacks", {})[name] = traceback.format_exc()
            say(f"{name} failed: {results['failed'][name]}")
            continue
        figures["wall_seconds"] = time.monotonic() - started
        results["benchmarks"][name] = figures
        say(f"{name} done in {figures['wall_seconds']:.0f} s")
    results["finished"] = datetime.now(UTC).isoformat()
    return results


def cli(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from bench.table import table
    from infra.logging import configure_logging

    args = arguments(argv)
    console = Console(width=max(Console().width, 132))
    configure_logging("console", "warning")
    raise_on_sigterm()
    try:
        results = asyncio.run(main(args, lambda text: console.print(f"[dim]{text}[/]")))
    except KeyboardInterrupt:
        console.print("interrupted: every server and worker started was stopped")
        return 130
    path = write(results, args.results)
    console.print(table(results))
    console.print(f"figures: {path} (and {path.parent / 'latest.json'})")
    for name, error in results["failed"].items():
        console.print(f"[red]{name} failed[/]: {error}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    code = cli()
    # The SDK's threads can race interpreter teardown (sdk-python #300): the figures are out.
    sys.stdout.flush()
    os._exit(code)
