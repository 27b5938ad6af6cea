"""Shared fixtures. Integration tests start their own local broker on a free port and stop it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs():
    from pipelines.cli import quiet_third_party_logs

    logging.basicConfig(level=logging.WARNING)
    quiet_third_party_logs()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real Kafka-protocol broker (Tansu) for the whole session, on a free loopback port."""
    from connectors.kafka.local_broker import LocalBroker, free_port

    b = LocalBroker(port=free_port(), run_dir=tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of its own, for tests that restart or empty it."""
    from connectors.kafka.local_broker import LocalBroker, free_port

    b = LocalBroker(port=free_port(), run_dir=tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def kafka_settings(broker):
    from connectors.config import KafkaSettings

    return KafkaSettings(bootstrap_servers=broker.bootstrap)
