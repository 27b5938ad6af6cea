"""Avro single-object encoding: schema identity travels with every message; compatible evolution decodes."""

from __future__ import annotations

import json

import pytest
from fastavro import parse_schema

import schemas
from connectors.avro import MAGIC, AvroDecoder, AvroEncoder, SchemaDecodeError

LIQ = {"exchange": "binance-futures", "symbol": "BTCUSDT", "base": "BTC", "quote": "USDT", "kind": "perpetual",
       "expiry": None, "event_time": 1_700_000_000_123_456, "ingest_time": 1_700_000_000_200_000, "side": "long",
       "price": 37000.5, "size": 0.25, "notional_usd": 9250.125, "order_id": None}


def test_every_schema_parses_and_documents_every_field():
    for sv in schemas.all_versions():
        assert sv.raw.get("doc"), sv.path.name
        for f in sv.raw["fields"]:
            assert f.get("doc"), f"{sv.path.name}: field {f['name']} has no doc"


def test_roundtrip_keeps_epoch_integers_and_header():
    value = AvroEncoder("liquidation").encode(LIQ)
    assert value[:2] == MAGIC and value[2:10] == schemas.latest("liquidation").fingerprint
    assert AvroDecoder("liquidation").decode(value) == LIQ


def test_wrong_type_truncated_and_foreign_bytes_raise_decode_error():
    value = AvroEncoder("liquidation").encode(LIQ)
    with pytest.raises(SchemaDecodeError, match="holds a liquidation"):
        AvroDecoder("trade").decode(value)
    with pytest.raises(SchemaDecodeError, match="corrupt"):
        AvroDecoder("liquidation").decode(value[:20])
    with pytest.raises(SchemaDecodeError, match="marker"):
        AvroDecoder("liquidation").decode(b'{"json": true}')
    with pytest.raises(SchemaDecodeError, match="unknown writer schema"):
        AvroDecoder("liquidation").decode(MAGIC + b"\x00" * 8 + value[10:])


@pytest.fixture
def liquidation_v2(tmp_path, monkeypatch):
    """A v2 schema adding an optional field, installed beside v1 as a real release would."""
    raw = json.loads((schemas.SCHEMA_DIR / "liquidation.v1.avsc").read_text())
    raw["fields"].append({"name": "venue_order_type", "type": ["null", "string"], "default": None, "doc": "added in v2"})
    v2 = tmp_path / "liquidation.v2.avsc"
    v2.write_text(json.dumps(raw))
    for p in schemas.SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / p.name).write_text(p.read_text())
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path)
    schemas.all_versions.cache_clear()
    yield parse_schema(raw)
    schemas.all_versions.cache_clear()


def test_v2_writer_read_by_v1_consumer_and_v1_writer_read_by_v2_consumer(liquidation_v2):
    assert schemas.latest("liquidation").version == 2
    v2_value = AvroEncoder("liquidation").encode({**LIQ, "venue_order_type": "LIMIT"})
    v1_value = AvroEncoder("liquidation", version=1).encode(LIQ)
    # an old consumer (reader v1) drops the field it does not know
    assert AvroDecoder("liquidation", version=1).decode(v2_value) == LIQ
    # a new consumer (reader v2) fills the default for old messages
    assert AvroDecoder("liquidation").decode(v1_value) == {**LIQ, "venue_order_type": None}
    assert AvroDecoder("liquidation").decode(v2_value)["venue_order_type"] == "LIMIT"
