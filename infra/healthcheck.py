"""`python -m infra.healthcheck`: the container's health. A worker with its metrics endpoint
on (CAREPATH_METRICS_ADDRESS) is healthy once the endpoint answers and shows the SDK's
worker started (connected to Temporal, polling its task queue). Exit 0 healthy, 1 not,
with one line saying why."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from infra.settings import SettingsError, load_settings


def check() -> str | None:
    """None when healthy, else the reason."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return str(exc)
    if settings.metrics_address is None:
        return "CAREPATH_METRICS_ADDRESS is not set: nothing to check the worker by"
    host, _, port = settings.metrics_address.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::"):  # listening everywhere: ask on loopback
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return f"metrics endpoint {host}:{port} does not answer ({exc})"
    if "temporal_worker_start" not in body:
        return "the worker has not started polling Temporal yet"
    return None


if __name__ == "__main__":
    reason = check()
    print(reason or "healthy", file=sys.stderr if reason else sys.stdout)
    sys.exit(1 if reason else 0)
