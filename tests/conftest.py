"""Shared fixtures. Integration tests start their own local broker on a free port and stop it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw their examples. `make test` (CI) draws the same ones every run, so a run
# passes or fails on the code, not on the draw; `make test-explore` draws new ones each time to
# look for counterexamples (one found a real overflow: tests/unit/test_normalizers_property.py).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("LIQSTREAM_HYPOTHESIS_PROFILE", "ci"))

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
    from connectors.kafka.local_broker import LocalBroker

    b = LocalBroker(port=0, run_dir=tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of its own, for tests that restart or empty it."""
    from connectors.kafka.local_broker import LocalBroker

    b = LocalBroker(port=0, run_dir=tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def kafka_settings(broker):
    from connectors.config import KafkaSettings

    return KafkaSettings(bootstrap_servers=broker.bootstrap)
