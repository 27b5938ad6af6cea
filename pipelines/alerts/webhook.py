"""Webhook sink: each alert as an HTTP POST of JSON, retried with exponential backoff.

A webhook URL is a secret (chat and paging services put the token in the path), and so is the
bearer token: logs, errors, the outbox and ``liqstream status`` show :func:`redact_url` and the
sink name only (scheme, host and a short hash of the URL). Delivery is at least once: a receiver
dedupes on the ``Idempotency-Key`` header (``<episode_id>:<severity_level>``), which is the same
on every retry and after a restart.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipelines.alerts.outbox import Delivery, Outcome, webhook_sink_name
from pipelines.alerts.record import idempotency_key, to_json
from pipelines.settings import AlertSettings

#: HTTP statuses worth retrying: the receiver is overloaded, restarting or rate-limiting; any other
#: 4xx means the request itself is refused, and sending it again would be refused again
RETRYABLE_STATUS = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """``https://hooks.example.com/…``: enough to tell receivers apart, nothing of path, query or user."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    retryable: bool
    error: str | None = None


class WebhookSink:
    def __init__(self, url: str, settings: AlertSettings) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"webhook {redact_url(url)}: only http and https URLs are supported")
        self._url = url
        self.name = webhook_sink_name(url)
        self.settings = settings
        self._headers = {"Content-Type": "application/json", "User-Agent": "liqstream-alerts"}
        if settings.webhook_token:
            self._headers["Authorization"] = f"Bearer {settings.webhook_token}"

    def __repr__(self) -> str:
        return f"WebhookSink({redact_url(self._url)})"

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def backoff_s(self, attempts: int) -> float:
        s = self.settings
        return min(s.webhook_max_backoff_s, s.webhook_backoff_s * 2 ** max(0, attempts - 1))

    def post(self, delivery: Delivery) -> Attempt:
        body = json.dumps(to_json(delivery.record)).encode()
        req = urllib.request.Request(self._url, data=body, method="POST",
                                     headers={**self._headers, "Idempotency-Key": idempotency_key(delivery.record)})
        try:
            with urllib.request.urlopen(req, timeout=self.settings.webhook_timeout_s) as resp:  # noqa: S310 - http(s) checked
                resp.read()
                return Attempt(True, False)
        except urllib.error.HTTPError as exc:  # its str() holds no URL; its .url would
            status = exc.code
            return Attempt(False, status >= 500 or status in RETRYABLE_STATUS, f"HTTP {status}")
        except TimeoutError:
            return Attempt(False, True, f"no answer within {self.settings.webhook_timeout_s:g}s")
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else type(reason).__name__
            if isinstance(reason, TimeoutError):
                text = f"no answer within {self.settings.webhook_timeout_s:g}s"
            return Attempt(False, True, f"unreachable: {text}")
        except OSError as exc:  # reset mid-response and the like
            return Attempt(False, True, f"connection failed: {exc.strerror or type(exc).__name__}")

    def deliver(self, batch: list[Delivery]) -> list[Outcome]:
        """POST each alert in order; a failed one is retried later (or dead-lettered), the rest go on."""
        out = []
        for d in batch:
            a = self.post(d)
            n = d.attempts + 1
            if a.ok:
                out.append(Outcome(d, "sent", n))
            elif a.retryable and n < self.settings.webhook_max_attempts:
                out.append(Outcome(d, "retry", n, a.error))
            else:
                reason = a.error if not a.retryable else f"{a.error} (gave up after {n} attempts)"
                out.append(Outcome(d, "dead", n, reason))
        return out
