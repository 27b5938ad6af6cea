"""Kafka I/O: local broker, topics, producer, offset-range reader."""
