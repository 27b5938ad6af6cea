"""Capture files: both formats read, every line accounted for; the writer reads back."""

from __future__ import annotations

import gzip

from connectors.sources.capture import (
    CaptureLineError,
    CaptureWriter,
    RawMessage,
    read_capture,
    venue_from_filename,
)
from tests.conftest import FIXTURES

EXCERPT = FIXTURES / "venues" / "binance-futures" / "BINANCE_FUTURES.ws.excerpt"


def test_cryptofeed_lines_parse_with_receive_time_and_skip_connection_lines():
    items = list(read_capture(EXCERPT, venue="binance-futures"))
    assert isinstance(items[0], CaptureLineError) and items[0].reason == "client_line"
    msgs = [i for i in items if isinstance(i, RawMessage)]
    assert len(msgs) == 6 and len(items) == 7
    assert msgs[0].received_at_us == 1626992742289739 and msgs[0].venue == "binance-futures"
    assert msgs[0].raw.startswith('{"stream":"ctkusdt@aggTrade"') and msgs[0].source.endswith(":2")


def test_venue_from_cryptofeed_file_names():
    assert venue_from_filename("x/BINANCE_FUTURES.ws.1.0.gz") == "binance-futures"
    assert venue_from_filename("OKX.0.gz") == "okx"
    assert venue_from_filename("mystery.jsonl") is None


def test_jsonl_writer_gzip_roundtrip_and_bad_lines_are_reported(tmp_path):
    path = tmp_path / "cap.jsonl.gz"
    with CaptureWriter(path) as w:
        w.write("bybit", 1_700_000_000_123_456, '{"topic":"x"}')
        w.write("okx", 1_700_000_001_000_000, {"arg": {"channel": "trades"}}, channel="rest")
    with gzip.open(path, "at") as fh:
        fh.write("not json at all\n")
        fh.write('{"exchange": "okx"}\n')
    items = list(read_capture(path))
    assert [type(i).__name__ for i in items] == ["RawMessage", "RawMessage", "CaptureLineError", "CaptureLineError"]
    assert items[0] == RawMessage("bybit", 1_700_000_000_123_456, '{"topic":"x"}', "cap.jsonl.gz:1", "ws")
    assert items[1].raw == '{"arg":{"channel":"trades"}}' and items[1].channel == "rest"
    assert {i.reason for i in items[2:]} == {"bad_capture_line"}


def test_jsonl_lines_read_as_json_loads_reads_them(tmp_path):
    # the inputs where the capture line parser (msgspec, ADR 005) and json.loads differ: the stdlib's
    # reading wins for each (NaN, a 30-digit int, the last duplicate key, a lone surrogate escape)
    path = tmp_path / "edge.jsonl"
    lines = [
        '{"exchange":"okx","received_at":1700000000.5,"raw":{"px":NaN,"n":123456789012345678901234567890}}',
        '{"exchange":"okx","received_at":1700000000.5,"raw":{"a":1,"a":2}}',
        '{"exchange":"okx","received_at":1700000000000000,"raw":"{\\"id\\":\\"\\ud800\\"}"}',
        '{"exchange":"okx","received_at":1700000000.5,"raw":' + "[" * 50_000 + "]" * 50_000 + "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    items = list(read_capture(path))
    assert [type(i).__name__ for i in items] == ["RawMessage", "RawMessage", "RawMessage", "CaptureLineError"]
    assert items[0].raw == '{"px":NaN,"n":123456789012345678901234567890}'
    assert items[0].received_at_us == 1_700_000_000_500_000
    assert items[1].raw == '{"a":2}'
    # a string raw is the message text; its \\ud800 escape decodes, as json.loads does, to a lone surrogate
    assert items[2].raw == '{"id":"\ud800"}' and items[2].received_at_us == 1_700_000_000_000_000
    assert items[3].reason == "bad_capture_line"  # nested deeper than the parsers go: counted, not raised
