"""Fault injection for the crash tests: ``LIQSTREAM_ALERTS_CRASH_AT=<point>`` kills the process
with SIGKILL (a real kill -9: no finally, no flush) when delivery reaches that point.

Points: ``after_commit`` (alerts committed with the marts, nothing sent yet) and
``after_produce`` (alerts acknowledged by the broker, not yet marked sent in the outbox).
"""

from __future__ import annotations

import os
import signal

ENV = "LIQSTREAM_ALERTS_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
