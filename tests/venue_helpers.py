"""Helpers shared by the venue normalizer tests: fixture readers and record checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fastavro.validation import validate

import schemas
from connectors.avro import AvroEncoder


def capture_raw_lines(path: Path) -> list[tuple[int, str]]:
    """cryptofeed ``T: JSON`` lines -> (received_at_us, raw JSON text)."""
    out = []
    for line in Path(path).read_text().splitlines():
        t, _, raw = line.partition(": ")
        out.append((int(round(float(t) * 1_000_000)), raw))
    return out


def capture_lines(path: Path) -> list[tuple[int, dict]]:
    """cryptofeed ``T: JSON`` lines -> (received_at_us, parsed message)."""
    return [(t, json.loads(raw)) for t, raw in capture_raw_lines(path)]


def doc_example(fixture_dir: Path, name: str) -> dict:
    """A hand-written documentation example from ``<fixture_dir>/doc_examples.jsonl``."""
    for line in (Path(fixture_dir) / "doc_examples.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["name"] == name:
            return row["raw"]
    raise KeyError(name)


def epoch_ms(*args: int) -> int:
    """datetime(*args) in UTC as epoch milliseconds."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def assert_encodes(event_type: str, record: dict) -> None:
    """The record fits its Avro schema and encodes with liqstream's encoder."""
    assert validate(record, schemas.latest(event_type).parsed, raise_errors=True)
    assert AvroEncoder(event_type).encode(record)[:2] == b"\xc3\x01"


def assert_all_encode(records: list) -> None:
    for event_type, record in records:
        assert_encodes(event_type, record)
