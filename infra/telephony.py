"""Check-in calls placed through a telephony provider's HTTP API, as real providers take
them: POST the call with a bearer token and the call's reference as `Idempotency-Key`, so a
retried activity never places a second call (the provider answers the first placing
again). The provider answers at once that it took the call; how the call ended comes later,
signed, to /api/v1/webhooks/{sender} (web.webhooks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from pydantic import BaseModel, ConfigDict

from clinical.aftercare import CallReport

PROVIDER_PATH = "/v1/calls"


class CallPlaced(BaseModel):
    """The provider took the call: its own ID for it and, from an in-process provider
    only, how it ended (None: the outcome comes later, by callback)."""

    model_config = ConfigDict(frozen=True)

    provider_call_id: str
    report: CallReport | None = None


class TelephonyRefused(Exception):
    """The provider refused the call for good (a bad number, a bad request): not retried."""


class TelephonyUnavailable(Exception):
    """No answer, or one worth retrying (408, 429, 5xx): the activity's retries take it."""


class HttpTelephony:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + PROVIDER_PATH
        self.token, self.timeout = token, timeout

    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        # The patient's opaque ID rides as the call's metadata (the provider echoes it);
        # the phone is the one piece of PHI the provider needs, over its TLS API.
        body = {
            "to": phone,
            "reference": reference,
            "script": list(instruments),
            "metadata": {"patient_id": patient_id},
        }
        headers = {"Content-Type": "application/json", "Idempotency-Key": reference}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                taken = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            text = f"the telephony provider answered {exc.code}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise TelephonyUnavailable(text) from None
            raise TelephonyRefused(text) from None
        except OSError as exc:
            raise TelephonyUnavailable(
                f"telephony provider unreachable ({type(exc).__name__})"
            ) from None
        except ValueError:
            raise TelephonyUnavailable("the telephony provider's answer is not JSON") from None
        call_id = taken.get("call_id") if isinstance(taken, dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise TelephonyUnavailable("the telephony provider's answer has no call_id")
        return CallPlaced(provider_call_id=call_id[:64])
