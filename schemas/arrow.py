"""Arrow schemas derived from the Avro contract, for vectorized processing of event batches."""

from __future__ import annotations

from functools import cache
from typing import Any

import pyarrow as pa

from schemas import latest

#: schema metadata key naming the event type of a batch
EVENT_TYPE_META = b"event_type"
#: Kafka position columns appended to batches read from Kafka (dedup key of the archive)
POSITION_FIELDS = (pa.field("_topic", pa.string()), pa.field("_partition", pa.int32()), pa.field("_offset", pa.int64()))


def avro_to_arrow(avro_type: Any) -> pa.DataType:
    if isinstance(avro_type, list):  # ["null", X]
        (inner,) = [t for t in avro_type if t != "null"]
        return avro_to_arrow(inner)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return pa.string()
        return avro_to_arrow(avro_type["type"])
    return {
        "string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
        "float": pa.float32(), "boolean": pa.bool_(), "bytes": pa.binary(),
    }[avro_type]


@cache
def arrow_schema(event_type: str, with_position: bool = False) -> pa.Schema:
    """Arrow schema of an event type (times stay epoch integers, as in the records)."""
    fields = [pa.field(f["name"], avro_to_arrow(f["type"])) for f in latest(event_type).raw["fields"]]
    if with_position:
        fields += list(POSITION_FIELDS)
    return pa.schema(fields, metadata={EVENT_TYPE_META: event_type.encode()})
