"""Running CarePath: the embedded Temporal server, the codec server for the Web UI, the
payload keys, and the demo."""

from __future__ import annotations

import argparse
from datetime import timedelta

from cli.common import CliError, care_store, console
from infra.codec import EncryptionCodec, KeyFileError, KeyRing
from infra.codec_server import CodecServer, console_operators
from infra.embedded_server import EmbeddedServer
from infra.settings import Settings
from infra.store.access_log import AccessLog
from infra.store.accounts import IdentityStore


def embedded_server(settings: Settings) -> EmbeddedServer:
    # With encryption on, the Web UI asks the codec server (`starter.py codec-server`) to
    # open payloads for an operator.
    extra = ["--ui-codec-endpoint", codec_endpoint(settings)] if settings.encryption else []
    return EmbeddedServer(
        data_dir=settings.data_dir,
        port=settings.server_port,
        ui_port=settings.ui_port,
        extra_args=extra,
    )


def codec_endpoint(settings: Settings) -> str:
    """What the Web UI is told (and what the server's command line shows): no secret; the
    operator signs in at the codec server itself."""
    return f"http://127.0.0.1:{settings.codec_port}"


def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    server = embedded_server(settings)
    if args.action == "start":
        already = server.running()
        pid = server.start()
        state = "already running" if already else "started"
        console.print(f"Temporal server {state} (pid {pid}) at {server.address}")
        console.print(f"Web UI: {server.ui_url}   data: {server.db_file}")
    elif args.action == "stop":
        stopped = server.stop()
        console.print("Temporal server stopped" if stopped else "Temporal server was not running")
    else:
        if server.running():
            console.print(f"running (pid {server.pid()}) at {server.address}, UI {server.ui_url}")
        else:
            console.print("not running")
            return 1
    return 0


def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the codec for the Web UI until Ctrl-C."""
    if not settings.encryption:
        raise CliError("encryption is off (CAREPATH_ENCRYPTION=off): nothing to decode")
    if not settings.key_file.exists():
        raise CliError(
            f"no payload key file at {settings.key_file}: the codec server reads the workers' "
            "key file (CAREPATH_KEYS_FILE), it never makes one"
        )
    try:
        codec = EncryptionCodec(KeyRing.load(settings.key_file))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    ui_origin = settings.ui_origin
    store = care_store(settings)
    identity, access = IdentityStore(store.engine), AccessLog(store.engine)
    operator, audit = console_operators(
        identity, access, timedelta(minutes=settings.console_idle_minutes)
    )
    console_url = f"http://{settings.console_host}:{settings.console_port}/"
    try:
        server = CodecServer(
            codec,
            operator,
            audit,
            settings.codec_port,
            ui_origin,
            settings.codec_host,
            console_url,
        )
    except OSError as exc:
        raise CliError(
            f"cannot listen on {settings.codec_host}:{settings.codec_port}: {exc.strerror}"
        ) from None
    console.print(
        f"codec server for {ui_origin} at {server.endpoint} (Ctrl-C stops it). Sign in to "
        f"the console ({console_url}) as an operator, then turn on 'Include cross-origin "
        "credentials' in the Web UI's codec settings."
    )
    try:
        server.httpd.serve_forever()
    finally:
        server.httpd.server_close()
        store.dispose()
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Make the payload key file (CAREPATH_KEYS_FILE) if there is none; name its active key
    (never the key itself)."""
    try:
        ring = KeyRing.load_or_create(settings.key_file)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    console.print(f"{settings.key_file}: active key {ring.active} of {len(ring.keys)}")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from demo.run import run_demo

    return await run_demo(
        settings,
        embedded_server(settings),
        patients=args.patients,
        program_id=args.program,
        seed=args.seed,
    )
