"""Ingest side of liqstream: venue normalizers, Avro serde, Kafka I/O, sources.

Knows nothing of ``pipelines`` (imports point one way: pipelines -> connectors -> schemas).
"""
