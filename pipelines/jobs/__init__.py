"""Drivers of the Beam graph: bounded loads over Kafka offset ranges (and, later, streaming cycles, backfills)."""
