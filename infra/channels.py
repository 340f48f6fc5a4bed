"""The ways a message leaves CarePath: e-mail through an SMTP server, texts through an SMS
provider's HTTP API, behind one interface. A send either returns (accepted), raises
SendRefused (refused for good: the message bounced) or SendFailed (worth trying again).

Neither the address nor the text is in an error's message: errors reach logs and the
dead-letter view. Each send carries a reference made from the outbox key, as the e-mail's
Message-ID and the provider's idempotency key, so a message sent again after a sender died
between sending and recording it can be recognised as the same by whoever receives it."""

from __future__ import annotations

import hashlib
import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from infra.settings import Settings, SettingsError

SUBJECT = "A message from your care team"
"""The same for every e-mail: a subject line shows on a locked screen."""


class SendRefused(Exception):
    """Refused for good (no such mailbox, not a mobile number): retrying cannot help."""


class SendFailed(Exception):
    """Not sent this time (the server is down, busy or timed out)."""


@dataclass(frozen=True)
class Outgoing:
    reference: str
    """Opaque, the same for every try of one outbox message (see `reference_of`)."""
    to: str = field(repr=False)
    text: str = field(repr=False)


def reference_of(outbox_key: str) -> str:
    """A reference for the outbox message with this key that names no patient."""
    return hashlib.sha256(outbox_key.encode()).hexdigest()[:32]


class Channel(Protocol):
    def send(self, message: Outgoing) -> None: ...


class SmtpChannel:
    """E-mail through an SMTP server (a relay, or the clinic's mail server)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        login: tuple[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.login, self.timeout = starttls, login, timeout

    def send(self, message: Outgoing) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = SUBJECT
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = f"<{message.reference}@{self.sender.rpartition('@')[2]}>"
        mail.set_content(message.text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.login is not None:
                    smtp.login(*self.login)
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            # The server's own words name the address: only its code goes on.
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise _by_code(codes[-1] if codes else 450, "refused the recipient") from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, "answered") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SendFailed(f"mail server unreachable ({type(exc).__name__})") from None


def _by_code(code: int, what: str) -> Exception:
    text = f"the mail server {what} with {code}"
    return SendRefused(text) if 500 <= code < 600 else SendFailed(text)


class SmsProviderChannel:
    """Texts through an SMS provider's HTTP API: POST a JSON message with a bearer token and
    an Idempotency-Key; 2xx accepted, 408/429/5xx or no answer worth retrying, any other
    4xx refused (an invalid number, an opted-out phone)."""

    def __init__(self, url: str, sender: str, token: str, *, timeout: float = 30.0) -> None:
        self.url, self.sender, self.token, self.timeout = url, sender, token, timeout

    def send(self, message: Outgoing) -> None:
        body = {"from": self.sender, "to": message.to, "text": message.text}
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Idempotency-Key": message.reference,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            text = f"the SMS provider answered {exc.code}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise SendFailed(text) from None
            raise SendRefused(text) from None
        except OSError as exc:
            raise SendFailed(f"SMS provider unreachable ({type(exc).__name__})") from None


def post_event(url: str, headers: dict[str, str], body: bytes, *, timeout: float = 30.0) -> None:
    """An event to a subscriber's endpoint: 2xx accepted; 408/429/5xx or no answer worth
    retrying (SendFailed); any other answer refused (SendRefused). Redirects are not
    followed: a signed event goes where the subscription says, or nowhere."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with _NO_REDIRECTS.open(request, timeout=timeout) as answer:
            answer.read(1024)
    except urllib.error.HTTPError as exc:
        text = f"the subscriber answered {exc.code}"
        if exc.code in (408, 429) or exc.code >= 500:
            raise SendFailed(text) from None
        raise SendRefused(text) from None
    except OSError as exc:
        raise SendFailed(f"subscriber unreachable ({type(exc).__name__})") from None


class _Refuse(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx comes back as an HTTPError: refused


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


def channels_from(settings: Settings) -> dict[str, Channel]:
    """The channels the settings configure, by name (none configured: an empty map)."""
    channels: dict[str, Channel] = {}
    if settings.smtp_host is not None:
        login = None
        if settings.smtp_user is not None:
            login = (settings.smtp_user, _secret(settings.smtp_password_file, "SMTP password"))
        channels["email"] = SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            starttls=settings.smtp_starttls,
            login=login,
        )
    if settings.sms_url is not None:
        token = _secret(settings.sms_token_file, "SMS provider token")
        channels["sms"] = SmsProviderChannel(settings.sms_url, settings.sms_from, token)
    return channels


def _secret(path: Path | None, what: str) -> str:
    if path is None:
        raise SettingsError(f"the {what} needs its file (CAREPATH_*_FILE)")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"the {what} file cannot be read ({exc.strerror})") from None
