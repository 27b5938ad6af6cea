"""The event contract: Avro schemas of liqstream's normalized events.

Files are named ``<event_type>.v<N>.avsc``. Every version ever published stays
here, because consumers resolve a message's writer schema by its fingerprint
(Avro single-object encoding, see ``connectors.avro``). Evolution rules are in
``schemas/README.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
_FILE_RE = re.compile(r"^(?P<event_type>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

#: Event types carried on Kafka, and the topic each one is published to.
EVENT_TYPES: tuple[str, ...] = ("trade", "liquidation", "open_interest", "funding", "book_depth")


@dataclass(frozen=True)
class SchemaVersion:
    event_type: str
    version: int
    path: Path
    raw: dict
    parsed: dict
    fingerprint: bytes  # 8-byte CRC-64-AVRO of the parsing canonical form, little-endian


@cache
def all_versions() -> tuple[SchemaVersion, ...]:
    """Every schema file in this folder, oldest version first."""
    found = []
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise ValueError(f"schema file {path.name} is not named <event_type>.v<N>.avsc")
        raw = json.loads(path.read_text())
        parsed = parse_schema(raw)
        fp_hex = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        found.append(
            SchemaVersion(
                event_type=m["event_type"],
                version=int(m["version"]),
                path=path,
                raw=raw,
                parsed=parsed,
                fingerprint=bytes.fromhex(fp_hex),
            )
        )
    return tuple(sorted(found, key=lambda s: (s.event_type, s.version)))


def latest(event_type: str) -> SchemaVersion:
    """The newest version of an event type's schema (what producers write)."""
    versions = [s for s in all_versions() if s.event_type == event_type]
    if not versions:
        raise KeyError(f"no schema for event type {event_type!r} in {SCHEMA_DIR}")
    return versions[-1]


def by_fingerprint() -> dict[bytes, SchemaVersion]:
    return {s.fingerprint: s for s in all_versions()}
