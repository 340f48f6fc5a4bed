"""Named, deliberate retry policies and timeouts for the journey's activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Store writes are idempotent, so retrying them is always safe: keep trying (with backoff)
# through a database restart, but never on a permanent error.
STORE_TIMEOUT = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    # StoreRefused: the database refused the write as it stands (a value too long, a broken
    # constraint): the journey fails where an operator sees it instead of retrying forever.
    non_retryable_error_types=[
        "ProtocolError",
        "UnknownPatient",
        "ValidationError",
        "StoreRefused",
    ],
)

# A telephony provider outage should not burn the patient's contact window: a few quick
# retries, then the check-in counts the attempt as unreachable and tries again days later.
TELEPHONY_TIMEOUT = timedelta(seconds=60)
TELEPHONY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=5,
    non_retryable_error_types=["UnknownPatient", "TelephonyRefused"],
)

# Reading a program file either works or the file is broken: do not spin on it.
PROGRAM_LOAD_TIMEOUT = timedelta(seconds=10)
PROGRAM_LOAD_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ProtocolError"])

# A partner service's intake system may be down for hours: keep trying with long backoff
# (the referral's own service-level timers tell the case manager if it stays silent), but a
# missing consent is a decision, not an outage.
PARTNER_TIMEOUT = timedelta(seconds=60)
PARTNER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    non_retryable_error_types=["ConsentMissing", "UnknownPatient"],
)
