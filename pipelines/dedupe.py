"""Drop replayed events: one event counted once, however often it reached the topics (ADR 016).

Kafka gives exactly-once from the topics to the marts (ADR 003), not from the feed to the topics:
a producer (replay, websocket ingest) killed and rerun, or a feed that resends after a reconnect,
writes the same event at new offsets. The events phase of a cycle therefore gives each event an
identity and keeps the first copy only:

* identity (:func:`event_key_sql`): venue + symbol + the venue's id where it gives one (a trade's
  ``trade_id``, a liquidation's ``order_id``), else a hash of the whole normalized record but its
  ``ingest_time`` (Binance liquidations, OI and funding snapshots carry no id); the first 64 bits
  of the md5 of that text, i.e. its first 8 digest bytes read as a little-endian UBIGINT (what
  DuckDB's ``md5_number_upper`` returns, computed without that macro's text round trip: ADR 046;
  with 10 million keys within the horizon, the odds that two different events share one are ~3 in
  a million);
* within a cycle: batches are split by ``key % shards`` and grouped (a shuffle of Arrow tables, not
  of rows), each shard keeps the copy at the lowest Kafka position;
* across cycles: the keys committed in ``event_keys`` (written in the transaction that commits the
  marts and offsets, so a crash neither loses nor double-counts) are exported once per cycle and
  every shard drops what they hold. The table keeps the keys whose event time lies within
  ``JobSettings.dedupe_horizon_s`` of the watermark: a copy of an event older than that is no
  longer recognised (it is counted like a new event).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

#: Beam counter of the copies dropped in a cycle (LoadResult.duplicates_in)
DUPLICATES = "duplicates_dropped"
#: the Parquet files of the cycle's new keys: ``<out_dir>/event_keys-<uuid>.parquet``
KEYS_NAME = "event_keys"
#: columns of a record that are not part of what happened (when it reached us; where it sits in Kafka)
_NOT_CONTENT = {"ingest_time", "_topic", "_partition", "_offset"}
#: per event type, the venue's own id column (null when the venue gives none)
_ID_COLUMNS = {"trade": "trade_id", "liquidation": "order_id"}


#: DuckDB's ``md5_number_upper(x)`` is, in DuckDB 2.0, a macro that casts ``md5_number(x)`` (a
#: UHUGEINT) to BIT, to a VARCHAR of 128 '0'/'1' characters, takes characters 65-128 (the low 64
#: bits), and casts them back through BIT to UBIGINT: ~40 % of the key's cost (ADR 046). Masking the
#: low 64 bits gives the same number, the first 8 bytes of the md5 digest read little-endian
#: (tests/unit/test_events_pass_outputs.py checks both against ``hashlib``), so stored keys keep matching.
_MD5_LOW64 = "(md5_number({}) & 18446744073709551615::UHUGEINT)::UBIGINT"


def event_key_sql(event_type: str, columns: list[str]) -> str:
    """A DuckDB expression: the 64-bit identity of a row of ``event_type`` with ``columns``
    (``md5_number_upper`` of the identity's text, computed as :data:`_MD5_LOW64`)."""
    return _MD5_LOW64.format(event_key_text_sql(event_type, columns))


def event_key_text_sql(event_type: str, columns: list[str]) -> str:
    """A DuckDB expression: the text whose md5 is the identity of a row (:func:`event_key_sql`)."""
    content = [c for c in columns if c not in _NOT_CONTENT]
    whole = "concat_ws('|', " + ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '\\N')" for c in content) + ")"
    ident = _ID_COLUMNS.get(event_type)
    if ident in columns:
        by_id = f"concat_ws('|', 'id', exchange, symbol, \"{ident}\")"
        text = f"CASE WHEN \"{ident}\" IS NULL OR \"{ident}\" = '' THEN {whole} ELSE {by_id} END"
    else:
        text = whole
    return f"concat_ws('|', '{event_type}', {text})"


def _order_by(columns: list[str]) -> str:
    pos = [c for c in ("_topic", "_partition", "_offset") if c in columns]
    return ", ".join(f'"{c}"' for c in pos) or "_row"


class _KeyByShard(beam.DoFn):
    """A batch -> ((event type, shard), table with its rows' ``_event_key``) per shard it touches."""

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def process(self, batch: pa.RecordBatch | pa.Table):
        import duckdb

        from pipelines.transforms.bars import event_type_of

        if not batch.num_rows:
            return
        event_type = event_type_of(batch)
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        con = duckdb.connect()
        try:
            con.register("t", table)
            keyed = con.sql(f"SELECT *, {event_key_sql(event_type, table.column_names)} AS _event_key, "
                                f"(_event_key % {self.shards})::INTEGER AS _shard FROM t").to_arrow_table()
        finally:
            con.close()
        keyed = keyed.replace_schema_metadata(batch.schema.metadata)  # the event type travels in it
        col = keyed.column("_shard")
        for shard in sorted(pc.unique(col).to_pylist()):
            yield (event_type, shard), keyed.filter(pc.equal(col, shard)).drop_columns(["_shard"])


class _DropShardDuplicates(beam.DoFn):
    """One shard's tables -> its first copies (RecordBatches of the input schema); writes the
    shard's new keys to ``event_keys-*.parquet`` and counts the copies dropped."""

    def __init__(self, seen_file: str | None, out_dir: str, shards: int) -> None:
        self.seen_file = seen_file
        self.out_dir = out_dir
        self.shards = shards
        self.dropped = beam.metrics.Metrics.counter("liqstream", DUPLICATES)

    def process(self, element):
        import duckdb

        (event_type, shard), tables = element
        tables = list(tables)
        schema = tables[0].schema.remove(tables[0].schema.get_field_index("_event_key"))
        table = pa.concat_tables(tables, promote_options="default")
        n = table.num_rows
        table = table.append_column("_row", pa.array(range(n), pa.int64()))
        con = duckdb.connect()
        try:
            con.register("t", table)
            seen = ""
            if self.seen_file:
                seen = (f"AND _event_key NOT IN (SELECT key FROM read_parquet('{self.seen_file}') "
                        f"WHERE key % {self.shards} = {shard})")
            kept = con.sql(
                f"SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY _event_key ORDER BY {_order_by(table.column_names)}) = 1 "
                f"{seen} ORDER BY _row").to_arrow_table()
            if kept.num_rows:
                con.register("kept", kept)
                Path(self.out_dir).mkdir(parents=True, exist_ok=True)
                con.execute(f"COPY (SELECT _event_key AS key, event_time AS event_time_us FROM kept) TO "
                            f"'{Path(self.out_dir) / f'{KEYS_NAME}-{uuid.uuid4().hex}.parquet'}' (FORMAT parquet)")
        finally:
            con.close()
        if n - kept.num_rows:
            self.dropped.inc(n - kept.num_rows)
        if kept.num_rows:
            out = kept.drop_columns(["_event_key", "_row"]).select(schema.names).cast(schema)
            yield from out.combine_chunks().to_batches()


class DropDuplicateEvents(beam.PTransform):
    """Event batches -> the same batches without the copies of an event (this cycle's, or one
    whose key ``seen_file`` holds); the kept events' keys land in ``out_dir``."""

    def __init__(self, seen_file: str | None, out_dir: str | Path, shards: int = 4) -> None:
        super().__init__()
        self.seen_file = seen_file
        self.out_dir = str(out_dir)
        self.shards = shards

    def expand(self, batches):
        return (batches
                | "KeyByShard" >> beam.ParDo(_KeyByShard(self.shards))
                | "GroupShards" >> beam.GroupByKey()
                | "DropCopies" >> beam.ParDo(_DropShardDuplicates(self.seen_file, self.out_dir, self.shards)))


# ---- the committed keys (DuckDB: looked up before the cycle's transaction, added in it) -----------------
def committed_among(con, keys: pa.Array) -> pa.Array:
    """Those of ``keys`` that ``event_keys`` holds (committed by an earlier cycle), each once.

    A semi-join inside the database, built on the cycle's keys: its cost grows with the cycle, and
    with the committed keys only as a scan of one UBIGINT column. The Parquet export the graph
    anti-joins (:func:`export_seen`) builds a hash table of *every* committed key instead, in each
    shard: at 10k events/s the horizon holds millions of keys within minutes, and that export and
    join grew into seconds per cycle (ADR 037)."""
    cycle = pa.table({"key": keys})
    con.register("_cycle_keys", cycle)
    try:
        return con.sql("SELECT DISTINCT key FROM event_keys WHERE key IN (SELECT key FROM _cycle_keys)"
                       ).to_arrow_table().column(0)
    finally:
        con.unregister("_cycle_keys")


def export_seen(con, path: Path) -> str | None:
    """The committed keys -> one Parquet file for the cycle's shards (None when there are none)."""
    (n,) = con.execute("SELECT count(*) FROM event_keys").fetchone()
    if not n:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT key FROM event_keys) TO '{path}' (FORMAT parquet)")
    return str(path)


def commit_keys(con, out_dir: Path, watermark_us: int | None, horizon_s: int) -> None:
    """Inside the cycle's transaction: add the cycle's new keys, forget those older than the
    horizon before the watermark (the table stays bounded)."""
    files = sorted(str(p) for p in Path(out_dir).glob(f"{KEYS_NAME}-*.parquet"))
    if files:
        con.execute("INSERT INTO event_keys SELECT key, event_time_us FROM read_parquet(?)", [files])
    if watermark_us is not None:
        con.execute("DELETE FROM event_keys WHERE event_time_us < ?", [watermark_us - horizon_s * 1_000_000])
