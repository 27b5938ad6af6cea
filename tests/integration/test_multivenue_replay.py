"""Multi-venue replay through the real local broker: every input line ends in exactly one place.

The capture is built here from the fixture excerpts of every venue plus lines
that must fail in known ways, each line with its own receive time. After
``publish_raw_stream`` every topic is read back from the broker and decoded:
normalized records carry their line's receive time as ``ingest_time`` and dead
letters carry ``file:line`` as ``source``, so the lines that reached Kafka are
identified from Kafka's contents, not from the replay's own counters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from connectors.avro import AvroDecoder
from connectors.config import KafkaSettings
from connectors.kafka.publish import publish_raw_stream
from connectors.kafka.reader import RangeReader, log_bounds, plan_ranges
from connectors.kafka.topics import all_topics
from connectors.normalize import TOPICS, UNROUTED_DLQ
from connectors.sources.capture import read_capture
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

VENUE_DIR = FIXTURES / "venues"
VENUES = ("binance-futures", "binance-delivery", "bybit", "okx", "hyperliquid", "deribit")
#: instrument reference data kept beside the excerpts: not market messages
METADATA = {"exchangeInfo.json", "instruments.json", "DERIBIT.instruments.excerpt.txt"}
#: cryptofeed excerpt lines: "T: JSON" received, "URL -> T: JSON" REST; "URL <-> T" connection lines are skipped
CRYPTOFEED_MESSAGE = re.compile(r"^(?:\S+ -> )?\d+(?:\.\d+)?: (?P<json>[\[{].*)$")
T0_US = 1_700_000_000_000_000
CAPTURE_NAME = "multivenue.jsonl"

#: Lines that must fail or be ignored in a known way: (capture line, expected topic or "ignored", reason)
BROKEN = [
    ("{not json", UNROUTED_DLQ, "bad_capture_line"),
    (json.dumps({"exchange": "binance-futures", "received_at": None}), UNROUTED_DLQ, "bad_capture_line"),
    (json.dumps({"exchange": "kraken-futures", "received_at": 0, "raw": '{"feed":"trade"}'}), UNROUTED_DLQ,
     "unknown_venue"),
    (json.dumps({"exchange": "bybit", "received_at": 0, "raw": '{"topic":"publicTrade.BTCUSDT","data":['}),
     UNROUTED_DLQ, "invalid_json"),
    (json.dumps({"exchange": "binance-futures", "received_at": 0, "raw": {"e": "mysteryEvent", "E": 1}}),
     UNROUTED_DLQ, "unknown_message"),
    (json.dumps({"exchange": "binance-futures", "received_at": 0, "raw": {"stream": "btcusdt@forceOrder", "data": {
        "e": "forceOrder", "E": 1568014460893, "o": {"s": "BTCUSDT", "S": "HOLD", "q": "0.014", "p": "9910",
                                                     "ap": "9910", "z": "0.014", "T": 1568014460893}}}}),
     "liquidations.v1.dlq", "bad_value"),
    # the JSON escape \ud800 decodes to a lone surrogate in trade_id: the record cannot be written as Avro
    (json.dumps({"exchange": "binance-futures", "received_at": 0,
                 "raw": '{"e":"aggTrade","E":1626992741575,"a":"\\ud800","s":"BTCUSDT","p":"30000.1","q":"0.5",'
                        '"T":1626992741421,"m":true}'}),
     "trades.v1.dlq", "unencodable"),
    (json.dumps({"exchange": "okx", "received_at": 0, "raw": "ping"}), "ignored", "heartbeat"),
]


def fixture_messages(venue: str) -> list[str | dict]:
    """Every market message of a venue's fixtures: excerpt texts as received, documented examples as objects."""
    out: list[str | dict] = []
    for path in sorted((VENUE_DIR / venue).iterdir()):
        if path.name in METADATA:
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                out.append(json.loads(line)["raw"])
            else:
                m = CRYPTOFEED_MESSAGE.match(line)
                if m:
                    out.append(m["json"])
    return out


def build_capture(path: Path) -> dict[int, int]:
    """Write the capture, interleaving venues; returns receive time (us) -> line number for good lines."""
    per_venue = {v: fixture_messages(v) for v in VENUES}
    assert all(per_venue.values()), {v: len(m) for v, m in per_venue.items()}
    lines: list[str] = []
    received_line: dict[int, int] = {}
    i = 0
    while any(per_venue.values()):
        for venue in VENUES:
            if per_venue[venue]:
                raw = per_venue[venue].pop(0)
                received = T0_US + 1000 * (len(lines) + 1)
                lines.append(json.dumps({"exchange": venue, "received_at": received, "raw": raw}))
                received_line[received] = len(lines)
        if i < len(BROKEN):
            # BROKEN lines carry received_at 0 or none: they are found by their source line, not their time
            lines.append(BROKEN[i][0])
            i += 1
    lines.extend(b[0] for b in BROKEN[i:])
    path.write_text("\n".join(lines) + "\n")
    return received_line


def read_everything(settings: KafkaSettings) -> dict[str, list]:
    """topic -> every ConsumerRecord on it, all partitions, from log start to log end."""
    ranges = plan_ranges(log_bounds(settings, all_topics()), {})
    out: dict[str, list] = {t: [] for t in all_topics()}
    with RangeReader(settings, idle_timeout_s=20) as reader:
        for rng in ranges:
            got = list(reader.read(rng))
            assert [r.offset for r in got] == list(range(rng.start, rng.end)), rng
            out[rng.topic].extend(got)
    return out


def test_multivenue_capture_every_line_lands_in_exactly_one_place(fresh_broker, tmp_path):
    capture = tmp_path / CAPTURE_NAME
    received_line = build_capture(capture)
    # independent count of the input: non-blank lines of the file as written
    input_lines = [n for n, line in enumerate(capture.read_text().splitlines(), start=1) if line.strip()]
    assert len(input_lines) >= 50

    kafka = KafkaSettings(bootstrap_servers=fresh_broker.bootstrap)
    counters = publish_raw_stream(read_capture(capture), kafka)
    topics = read_everything(kafka)

    # normalized topics: decode every message, check its key, find the input line by its receive time
    normalized_lines: set[int] = set()
    per_venue_type: Counter = Counter()
    for event_type, topic in TOPICS.items():
        decoder = AvroDecoder(event_type)
        for msg in topics[topic]:
            rec = decoder.decode(msg.value)
            assert msg.key.decode() == f"{rec['exchange']}:{rec['symbol']}"
            assert rec["ingest_time"] in received_line, rec
            normalized_lines.add(received_line[rec["ingest_time"]])
            per_venue_type[(rec["exchange"], event_type)] += 1
    n_normalized_records = sum(len(topics[t]) for t in TOPICS.values())
    assert n_normalized_records == sum(counters.records.values())
    assert per_venue_type == counters.records
    # every venue's fixtures put something on the normalized topics
    assert {venue for venue, _ in per_venue_type} == set(VENUES)
    # every normalized topic gets something (book_depth: the Hyperliquid l2Book examples)
    assert {et for _, et in per_venue_type} == set(TOPICS)

    # dead-letter topics: one message per dead letter, each naming its input line
    dead_decoder = AvroDecoder("dead_letter")
    dlq_topics = [t for t in all_topics() if t.endswith(".dlq")]
    dead_by_line: dict[int, tuple[str, str]] = {}
    for topic in dlq_topics:
        for msg in topics[topic]:
            dead = dead_decoder.decode(msg.value)
            assert msg.key.decode() == (dead["exchange"] or "unknown")
            name, _, line_no = dead["source"].rpartition(":")
            assert name == CAPTURE_NAME
            assert int(line_no) not in dead_by_line, "one dead letter per line"
            dead_by_line[int(line_no)] = (topic, dead["reason"])
    n_dead = sum(len(topics[t]) for t in dlq_topics)
    assert n_dead == len(dead_by_line) == sum(counters.dead.values())

    # the broken lines went exactly where expected
    text_lines = capture.read_text().splitlines()
    for line, where, reason in BROKEN:
        line_no = text_lines.index(line) + 1
        if where == "ignored":
            assert line_no not in dead_by_line and line_no not in normalized_lines
        else:
            assert dead_by_line[line_no] == (where, reason), line
    n_ignored = sum(counters.ignored.values())
    assert counters.ignored[("okx", "heartbeat")] == 1

    # the books balance, counted from the broker's contents: each input line in exactly one place
    assert not normalized_lines & set(dead_by_line)
    assert len(normalized_lines) + len(dead_by_line) + n_ignored == len(input_lines)
    assert sum(counters.normalized_messages.values()) == len(normalized_lines)
    assert sum(counters.messages.values()) == len(input_lines) and counters.balanced
