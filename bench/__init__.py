"""Benchmarks of liqstream's hot paths; run as modules (``python -m bench.ingest``), never from the tests."""
