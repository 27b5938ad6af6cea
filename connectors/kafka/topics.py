"""Topic layout and creation."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from connectors.config import KafkaSettings
from connectors.normalize import TOPICS, UNROUTED_DLQ, dlq_topic

log = logging.getLogger(__name__)

#: cascade alerts published by the stream job (schema cascade_alert.v1, key = episode id): an output,
#: so not among the topics the jobs consume (all_topics)
ALERTS_TOPIC = "cascade_alerts.v1"


def all_topics() -> list[str]:
    """The topics the jobs read: the normalized topics and their dead-letter topics."""
    normalized = list(TOPICS.values())
    return normalized + [dlq_topic(t) for t in TOPICS] + [UNROUTED_DLQ]


def ensure_topics(settings: KafkaSettings, topics: list[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet (default: every topic liqstream reads or writes,
    the alert topic included); return the ones created.

    Dead-letter topics get one partition (volume is small and order helps
    whoever reads them); the others get ``settings.partitions``.
    """
    topics = topics or [*all_topics(), ALERTS_TOPIC]
    admin = KafkaAdminClient(**settings.client_kwargs())
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                name=t,
                num_partitions=1 if t.endswith(".dlq") else settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"retention.ms": str(settings.retention_ms)},
            )
            for t in topics
            if t not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:  # raced with another creator: fine
                pass
            log.info("created topics %s", [t.name for t in new])
        return [t.name for t in new]
    finally:
        admin.close()


def cluster_id(settings: KafkaSettings) -> str:
    admin = KafkaAdminClient(**settings.client_kwargs())
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()
