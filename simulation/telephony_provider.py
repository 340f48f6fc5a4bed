"""The simulated telephony provider as a service of its own, used by the demo and the tests
in place of a real one: `python -m simulation.telephony_provider --callback-url URL`.

It takes calls as a real provider's HTTP API does (POST /v1/calls with an Idempotency-Key:
the same key again is the same call, placed once), places nothing, and later tells CarePath
how each call ended with a signed webhook (Standard Webhooks, as infra.webhooks checks),
answering from the seeded patient model (simulation.telephony.seeded_answer). Like a real
provider it is imperfect, by seeded draws per call: its API sometimes answers 503 (the
activity retries), callbacks come after a delay, sometimes twice (a retry under the same
event ID, a re-send under a new one), and sometimes never (the workflow's wait runs out).
Its ledger is in memory: a simulator restarted forgets its calls.

`running_provider` starts it as a child process and stops it by its PID."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from infra.settings import PROJECT_ROOT
from infra.webhooks import signature
from simulation.behaviour import load_behaviour, seeded
from simulation.telephony import seeded_answer

UNREACHED = ("no-answer", "no-answer", "busy", "failed")
"""How an unreached patient's call ends at the provider (no answer is the usual)."""
RETRIES = (0.5, 1.0, 2.0, 4.0)  # a callback not taken is tried again after these pauses


@dataclass
class Behaviour:
    """How the provider behaves; every choice is a seeded draw per call."""

    seed: str = "carepath"
    delay: tuple[float, float] = (0.05, 0.4)  # seconds before the callback
    silent: float = 0.0  # share of calls whose callback never comes
    duplicate: float = 0.1  # share of callbacks sent twice
    busy_api: float = 0.05  # share of first placings answered 503
    use_risk: float = 0.0
    reachability: tuple[float, float] = (0.55, 0.95)


@dataclass
class Provider:
    callback_url: str
    secret: str
    behaviour: Behaviour
    token: str | None = None
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # by Idempotency-Key
    tried: set[str] = field(default_factory=set)
    sent: int = 0  # callbacks taken (answered 2xx)

    def place(self, reference: str, patient_id: str, script: tuple[str, ...]) -> dict[str, Any]:
        """The call for `reference`, placed once; its callback scheduled."""
        known = self.calls.get(reference)
        if known is not None:
            return known
        call = {"call_id": f"CA{len(self.calls) + 1:06d}", "status": "queued"}
        self.calls[reference] = call
        asyncio.get_running_loop().create_task(self._call_back(call, reference, patient_id, script))
        return call

    async def _call_back(
        self, call: dict[str, Any], reference: str, patient_id: str, script: tuple[str, ...]
    ) -> None:
        b = self.behaviour
        draws = seeded(b.seed, reference, "provider")
        await asyncio.sleep(draws.uniform(*b.delay))
        if draws.random() < b.silent:
            return
        outcome, check_in = seeded_answer(
            b.seed, patient_id, reference, script, b.use_risk, b.reachability
        )
        status = {"reached": "completed", "declined": "declined"}.get(
            outcome.value, draws.choice(UNREACHED)
        )
        event = {
            "type": "call.completed",
            "call_id": call["call_id"],
            "reference": reference,
            "status": status,
            "answers": None if check_in is None else check_in.model_dump(mode="json"),
            "duration_seconds": draws.randint(40, 900) if check_in else 0,
        }
        body = json.dumps(event).encode()
        event_id = f"evt_{call['call_id']}"
        await self._deliver(event_id, body)
        if draws.random() < b.duplicate:
            await self._deliver(event_id, body)  # a retry: the same event again
            await self._deliver(f"{event_id}_resent", body)  # a re-send: a new event ID

    async def _deliver(self, event_id: str, body: bytes) -> None:
        for pause in (*RETRIES, None):
            answered = await asyncio.to_thread(self._post, event_id, body)
            if answered is not None:
                self.sent += answered  # taken (2xx); refused for good (4xx) is not
                return
            if pause is None:
                return
            await asyncio.sleep(pause)

    def _post(self, event_id: str, body: bytes) -> bool | None:
        """One delivery: True taken, False refused for good, None worth trying again."""
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            self.callback_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "webhook-id": event_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": signature(self.secret, event_id, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()
            return True
        except urllib.error.HTTPError as exc:
            return None if exc.code >= 500 or exc.code in (408, 429) else False
        except OSError:
            return None


def create_app(provider: Provider) -> FastAPI:
    app = FastAPI(title="Simulated telephony provider", docs_url=None, redoc_url=None)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"calls": len(provider.calls), "callbacks_sent": provider.sent}

    @app.post("/v1/calls", status_code=201)
    async def place_call(request: Request) -> JSONResponse:
        if provider.token and request.headers.get("authorization") != f"Bearer {provider.token}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        try:
            body = json.loads(await request.body())
            reference = str(body["reference"])
            patient_id = str(body["metadata"]["patient_id"])
            script = tuple(str(s) for s in body.get("script", ()))
            assert body.get("to") and key == reference
        except (ValueError, KeyError, TypeError, AssertionError):
            return JSONResponse(
                {"error": "to, reference (= Idempotency-Key), metadata.patient_id"}, 400
            )
        first = key not in provider.tried
        provider.tried.add(key)
        draw = seeded(provider.behaviour.seed, key, "api").random()
        if first and draw < provider.behaviour.busy_api:
            return JSONResponse({"error": "busy, try again"}, status_code=503)
        known = key in provider.calls
        return JSONResponse(provider.place(key, patient_id, script), 200 if known else 201)

    return app


# --- as a child process -----------------------------------------------------------------------


@asynccontextmanager
async def running_provider(
    port: int, callback_url: str, secret_file: Path, log: Path, *options: str
) -> AsyncIterator[str]:
    """The provider service on `port` (its base URL yielded once it answers), calling back
    to `callback_url`; stopped by its PID (SIGTERM, then SIGKILL) whatever happens."""
    command = [
        sys.executable,
        "-m",
        "simulation.telephony_provider",
        "--port",
        str(port),
        "--callback-url",
        callback_url,
        "--secret-file",
        str(secret_file),
        *options,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_answers, base):
            if proc.poll() is not None:
                raise RuntimeError(f"the telephony provider exited ({proc.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the telephony provider did not answer; see {log}")
            await asyncio.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(base: str) -> bool:
    with suppress(OSError), urllib.request.urlopen(f"{base}/v1/health", timeout=1) as answer:
        return bool(answer.status == 200)
    return False


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m simulation.telephony_provider", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--callback-url", required=True, help="CarePath's webhook for calls")
    parser.add_argument("--secret-file", type=Path, required=True, help="the sender's secret")
    parser.add_argument("--token-file", type=Path, help="the bearer token callers must send")
    parser.add_argument("--seed", default="carepath")
    parser.add_argument("--delay", type=_pair, default=(0.05, 0.4), help="seconds: low,high")
    parser.add_argument("--silent", type=float, default=0.0, help="share never called back")
    parser.add_argument("--duplicate", type=float, default=0.1, help="share called back twice")
    parser.add_argument("--busy-api", type=float, default=0.05, help="share answered 503 first")
    parser.add_argument(
        "--use-risk", type=float, help="highest chance of use reported (behaviour.toml's)"
    )
    args = parser.parse_args(argv)
    try:
        secret = args.secret_file.read_text().strip()
        token = args.token_file.read_text().strip() if args.token_file else None
    except OSError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    aftercare = load_behaviour().aftercare  # the patients' reach, as the what-if's
    behaviour = Behaviour(
        seed=args.seed,
        delay=args.delay,
        silent=args.silent,
        duplicate=args.duplicate,
        busy_api=args.busy_api,
        use_risk=aftercare.use_risk if args.use_risk is None else args.use_risk,
        reachability=(aftercare.reachability_low, aftercare.reachability_high),
    )
    provider = Provider(args.callback_url, secret, behaviour, token)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvicorn.run(create_app(provider), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
