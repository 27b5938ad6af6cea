"""The paced benchmarks' load generator on librdkafka (bench.data.RdkafkaEventProducer) against a
real broker: every record arrives once, with the topic, key, timestamp and Avro value the
connectors' kafka-python EventProducer gives the same record (so the bench feeds the job what
production does, only cheaper to produce)."""

from __future__ import annotations

import pytest

from bench.data import SYNTH_START_US, RdkafkaEventProducer, synth_tables
from connectors.avro import AvroDecoder
from connectors.config import KafkaSettings
from connectors.kafka.producer import EventEncoder
from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
from connectors.kafka.topics import ensure_topics
from connectors.normalize import TOPIC_EVENT, TOPICS

pytestmark = pytest.mark.integration


def test_rdkafka_load_generator_delivers_what_the_connectors_producer_would(fresh_broker) -> None:
    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    ensure_topics(kafka)
    tables = synth_tables(400, SYNTH_START_US, 60_000_000, seed=3)
    records = [(et, r) for et, t in tables.items()
               for r in t.drop_columns(["_topic", "_partition", "_offset"]).to_pylist()]
    with RdkafkaEventProducer(fresh_broker.bootstrap) as producer:
        for et, r in records:
            producer.send_encoded(*producer.encode_event(et, r))
    ref = EventEncoder()
    expected = sorted(ref.encode_event(et, r) for et, r in records)
    got = []
    with RangeReader(kafka, idle_timeout_s=10) as reader:
        for rng in plan_ranges(log_bounds(kafka, list(TOPICS.values())), {}):
            got += [(rng.topic, rec.key, rec.value, rec.timestamp) for rec in reader.read(rng)]
    assert sorted(got) == expected
    by_topic = TOPIC_EVENT
    decoded = sorted((by_topic[t], AvroDecoder(by_topic[t]).decode(v)["event_time"]) for t, _, v, _ in got)
    assert decoded == sorted((et, r["event_time"]) for et, r in records)
