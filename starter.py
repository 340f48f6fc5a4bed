"""CarePath's command line, for case managers and operators.

    python starter.py server start|stop|status
    python starter.py enrol FILE.json | --generate [--case-manager CM-01 --site north]
    python starter.py attendance PATIENT SESSION attended|missed|excused --case-manager CM-01
    python starter.py discharge PATIENT --reason withdrew --case-manager CM-01
    python starter.py relapse PATIENT --ratings 1,0,2,2,3,3 --case-manager CM-01
    python starter.py status PATIENT [--json]
    python starter.py export PATIENT --fhir [--out FILE]
    python starter.py list [--phase P] [--case-manager CM] [--site S] [--json]
    python starter.py report [--site S] [--case-manager CM] [--program P]
        [--enrolled-from D --enrolled-to D] [--html FILE] [--png-dir DIR] [--json]
    python starter.py tracks [--site S] [--program P] [--json]
    python starter.py demo [--patients 20]
    python starter.py simulate --program A --program B [--patients 50 --arrivals 10/week
        --seed 7 --seeds 3]

Every error is one line on stderr naming the problem, with a non-zero exit; a refused
request changes nothing."""

import os
import sys

from cli.main import main

if __name__ == "__main__":
    code = main()
    # The SDK's Rust client threads can race CPython's interpreter teardown in short-lived
    # processes and abort it (temporalio/sdk-python issue #300). Our work is done and
    # flushed: skip the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
