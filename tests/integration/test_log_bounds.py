"""Log bounds from a fetch of 0 bytes (ADR 052), on the real local broker.

The plan and the lag probe ask every partition's (log start, log end). On the local broker each
ListOffsets and each fetch that may return records lists every record batch of the partition; the
default path takes the log end from a fetch that asks for no bytes and asks the log start only when
it is older than ``log_start_refresh_s``. Both paths must give the same bounds, equal to what was sent.
"""

from __future__ import annotations

from collections import Counter

import pytest
from kafka import KafkaConsumer

from bench.data import SYNTH_START_US, in_time_order, publish_events, synth_tables
from connectors.config import KafkaSettings
from connectors.kafka import reader
from connectors.kafka.reader import log_bounds
from connectors.normalize import TOPICS

pytestmark = pytest.mark.integration
MAIN_TOPICS = list(TOPICS.values())


def _publish(kafka: KafkaSettings, n: int, seed: int, start_us: int) -> Counter:
    """n synthetic events in the live feed's layout (a few records per batch); -> events sent per topic."""
    tables = synth_tables(n, start_us, 600_000_000, seed)
    publish_events(kafka, in_time_order(tables), "paced")
    return Counter({TOPICS[et]: t.num_rows for et, t in tables.items()})


def _per_topic(bounds: dict) -> Counter:
    got: Counter = Counter()
    for (topic, _), (begin, end) in bounds.items():
        got[topic] += end - begin
    return got


@pytest.fixture
def count_list_offsets(monkeypatch):
    """Partitions asked by ListOffsets (earliest, latest) in this test, through kafka-python."""
    asked = {"earliest": 0, "latest": 0}
    earliest, latest = KafkaConsumer.beginning_offsets, KafkaConsumer.end_offsets

    def beginning(self, partitions):
        asked["earliest"] += len(partitions)
        return earliest(self, partitions)

    def end(self, partitions):
        asked["latest"] += len(partitions)
        return latest(self, partitions)

    monkeypatch.setattr(KafkaConsumer, "beginning_offsets", beginning)
    monkeypatch.setattr(KafkaConsumer, "end_offsets", end)
    monkeypatch.setattr(reader, "_BOUNDS_SEEN", {})
    return asked


def test_bounds_from_a_fetch_of_no_bytes_equal_listoffsets_and_what_was_sent(fresh_broker, count_list_offsets):
    by_fetch = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    assert by_fetch.bounds_by_fetch  # the default
    listed = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, bounds_by_fetch=False)
    sent = _publish(by_fetch, 6_000, seed=3, start_us=SYNTH_START_US)

    first = log_bounds(by_fetch, MAIN_TOPICS)
    partitions = len(first)
    assert partitions == len(MAIN_TOPICS) * by_fetch.partitions
    assert count_list_offsets == {"earliest": partitions, "latest": 0}  # the log start once, no log end
    assert first == log_bounds(listed, MAIN_TOPICS)
    assert _per_topic(first) == sent and all(begin == 0 for begin, _ in first.values())

    count_list_offsets.update(earliest=0, latest=0)
    sent += _publish(by_fetch, 4_000, seed=4, start_us=SYNTH_START_US + 600_000_000)
    second = log_bounds(by_fetch, MAIN_TOPICS)  # from the last ends seen: no ListOffsets at all
    assert count_list_offsets == {"earliest": 0, "latest": 0}
    assert _per_topic(second) == sent
    assert second == log_bounds(listed, MAIN_TOPICS)
    assert any(second[tp][1] > first[tp][1] for tp in first) and all(second[tp][1] >= first[tp][1] for tp in first)


def test_the_log_start_is_asked_again_once_older_than_the_refresh(fresh_broker, count_list_offsets):
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap, log_start_refresh_s=0.0)
    sent = _publish(kafka, 2_000, seed=5, start_us=SYNTH_START_US)
    for _ in range(2):
        bounds = log_bounds(kafka, MAIN_TOPICS)
        assert _per_topic(bounds) == sent
    assert count_list_offsets == {"earliest": 2 * len(bounds), "latest": 0}


def test_an_empty_topic_and_a_missing_one(fresh_broker):
    from connectors.kafka.topics import ensure_topics

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    ensure_topics(kafka)
    assert log_bounds(kafka, ["no.such.topic"]) == {}
    empty = log_bounds(kafka, MAIN_TOPICS)
    assert empty and set(empty.values()) == {(0, 0)}


def test_a_log_shorter_than_remembered_has_its_start_asked_again(fresh_broker, count_list_offsets):
    """This process remembers each partition with a later start and a longer log than the broker now
    has (the topic was deleted and made again, e.g. after retention had moved its start): the
    remembered start must not stand, or the plan would start past records the new log holds."""
    import time

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    sent = _publish(kafka, 2_000, seed=6, start_us=SYNTH_START_US)
    now = time.monotonic()
    for p in range(kafka.partitions):
        for topic in MAIN_TOPICS:
            reader._BOUNDS_SEEN[(kafka.bootstrap_servers, topic, p)] = (500, 1_000_000, now)
    bounds = log_bounds(kafka, MAIN_TOPICS)
    assert all(begin == 0 for begin, _ in bounds.values())
    assert _per_topic(bounds) == sent
    assert count_list_offsets["earliest"] == len(bounds) and count_list_offsets["latest"] == 0
