"""Starting the local broker on a loaded machine: a free port taken before tansu binds it."""

from __future__ import annotations

import logging
import socket

import pytest

from connectors.kafka import local_broker
from connectors.kafka.local_broker import BrokerError, LocalBroker

pytestmark = [pytest.mark.integration]


def _taken_port() -> socket.socket:
    """A port bound but not listening: a connect to it is refused (it looks free), tansu's bind fails."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def test_a_free_port_taken_before_tansu_binds_it_is_retried_on_another(tmp_path, monkeypatch, caplog):
    taken = _taken_port()
    picks = iter([taken.getsockname()[1]])
    real = local_broker.free_port
    monkeypatch.setattr(local_broker, "free_port", lambda: next(picks, None) or real())
    caplog.set_level(logging.WARNING, logger="liqstream.broker")
    try:
        with LocalBroker(port=0, run_dir=tmp_path) as b:
            assert b.port != taken.getsockname()[1]
            assert local_broker.port_open(b.host, b.port)
    finally:
        taken.close()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "attempt 1 of 3" in warning and "AddrInUse" in warning  # the reason, from tansu's log


def test_a_fixed_port_that_tansu_cannot_bind_fails_with_the_reason(tmp_path):
    taken = _taken_port()
    try:
        with pytest.raises(BrokerError, match="AddrInUse"):
            LocalBroker(port=taken.getsockname()[1], run_dir=tmp_path).start(attempts=2)
    finally:
        taken.close()
    assert not list(tmp_path.glob("*.pid"))
