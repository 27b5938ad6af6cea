"""A SIGKILLed backfill must not leave its pool workers behind (issue 16 (d), docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The parent: a fork pool like the backfill's (_days_in_pool), its workers started, their pids
# printed, then it waits to be killed.
PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pipelines.jobs.backfill import die_with_parent

init = die_with_parent if sys.argv[1] == "watch" else None
pool = ProcessPoolExecutor(2, mp_context=get_context("fork"), initializer=init,
                           initargs=(os.getpid(),) if init else ())
pids = sorted({f.result() for f in
             [pool.submit(os.getpid) for _ in range(8)]})
print(" ".join(map(str, pids)), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _workers_after_parent_killed(mode: str) -> list[int]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids and proc.pid not in pids
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # the kernel's death signal is immediate; allow a loaded machine to reap
        if not any(_alive(p) for p in pids):
            break
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_sigkilled_parent() -> None:
    assert _workers_after_parent_killed("watch") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_without_the_initializer_the_workers_are_orphaned() -> None:
    """The control: the fault is real (a fork pool's idle workers outlive a SIGKILLed parent)."""
    assert _workers_after_parent_killed("none") != []
