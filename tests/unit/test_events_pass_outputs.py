"""The events pass's outputs that ADR 046 made cheaper, against independent computations.

Keys: the dedupe's event keys (ADR 016, 046).

The keys committed in ``event_keys`` by earlier runs were DuckDB's ``md5_number_upper`` of the
identity's text; the key expression computes it another way (ADR 046), so it must give the same
number on every row: checked against that macro and against ``hashlib.md5`` of the same text
(first 8 digest bytes, little-endian), for every event type, with ids present, empty and missing,
nulls, and doubles whose text is unusual (NaN, infinities, -0.0, huge and tiny magnitudes).

Archive: the files written with either ``JobSettings.archive_parquet`` hold their input's rows,
schema and values (read back by Arrow, by DuckDB SQL and by the backfill's readers).
"""

from __future__ import annotations

import hashlib
import itertools

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.data import SYNTH_START_US, synth_tables
from connectors.kafka.fetch import Fetched
from pipelines import archive
from pipelines.archive import days_in, parquet_options, read_day, read_day_columns, write_archive_table
from pipelines.dedupe import event_key_sql, event_key_text_sql
from pipelines.events_pass import KEY, drop_duplicates, read_keyed, run_events_pass
from pipelines.settings import ARCHIVE_PARQUET, JobSettings
from schemas.arrow import EVENT_TYPE_META

_ODD = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e300, 5e-324, 1e16, 1e-5, 123456789.125, 0.1]


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas (metadata included) and values, NaN equal to NaN (``Table.equals`` says not)."""
    if not a.schema.equals(b.schema, check_metadata=True) or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        if pa.types.is_floating(x.type):
            x, y = x.to_numpy(), y.to_numpy()  # nulls as NaN: compare the validity too
            if not (np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y))):
                return False
        elif not x.equals(y):
            return False
    return all(x.is_valid().equals(y.is_valid()) for x, y in zip(a.columns, b.columns, strict=True))


def _md5_low64(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "little")


def _tables() -> dict[str, pa.Table]:
    """Synthetic events of every type, with odd values and ids spliced into the first rows."""
    out = {}
    for et, t in synth_tables(4_000, SYNTH_START_US, 60_000_000, 7).items():
        n = t.num_rows
        cols = {name: t[name].combine_chunks() for name in t.column_names}
        floats = [name for name, col in cols.items() if pa.types.is_float64(col.type)]
        for j, name in enumerate(floats):
            vals = cols[name].to_pylist()
            for i, v in enumerate(_ODD):
                vals[(i + j) % n] = v
            vals[len(_ODD) + j] = None
            cols[name] = pa.array(vals, pa.float64())
        ident = {"trade": "trade_id", "liquidation": "order_id"}.get(et)
        if ident is not None:  # a third with an id, a third with '', a third null
            cols[ident] = pa.array([str(i * 7919) if i % 3 == 0 else "" if i % 3 == 1 else None for i in range(n)],
                                   pa.string())
        sym = cols["symbol"].to_pylist()
        sym[1] = "ÉTH|USD\\N"  # non-ASCII, the separator and the null marker inside a value
        cols["symbol"] = pa.array(sym, pa.string())
        out[et] = pa.table(cols).replace_schema_metadata({EVENT_TYPE_META: et.encode()})
    return out


TABLES = _tables()


@pytest.mark.parametrize("event_type", sorted(TABLES))
def test_keys_equal_md5_number_upper_and_hashlib(event_type):
    table = TABLES[event_type]
    con = duckdb.connect()
    con.register("t", table)
    text = event_key_text_sql(event_type, table.column_names)
    rows = con.sql(f"SELECT {event_key_sql(event_type, table.column_names)}, md5_number_upper({text}), {text} "
                   "FROM t").fetchall()
    assert len(rows) == table.num_rows
    assert len({r[2] for r in rows}) == table.num_rows  # every row its own text: no test of one value
    for key, macro, txt in rows:
        assert key == macro == _md5_low64(txt)


def test_the_events_pass_reads_the_same_keys(tmp_path):
    """``read_keyed`` (one connection for a cycle's files) gives each row the key of its text."""
    con = duckdb.connect()
    for event_type, table in TABLES.items():
        path = tmp_path / f"{event_type}.arrow"
        with pa.ipc.new_file(str(path), table.schema) as w:
            w.write_table(table)
        got_type, keyed = read_keyed(str(path), True, con)
        assert got_type == event_type
        con.register("t", table)
        texts = con.sql(f"SELECT {event_key_text_sql(event_type, table.column_names)} FROM t").fetchall()
        assert keyed[KEY].to_pylist() == [_md5_low64(t) for (t,) in texts]
        assert same_rows(keyed.drop_columns([KEY]), table)


def test_a_known_key():
    # md5('abc') = 900150983cd24fb0...: its first 8 bytes little-endian
    assert _md5_low64("abc") == 0xB04FD23C98500190 == 12704604231530709392
    con = duckdb.connect()
    con.register("t", pa.table({"x": ["abc"]}))
    ((key,),) = con.sql("SELECT " + event_key_sql("x", ["x"]).replace(
        event_key_text_sql("x", ["x"]), "x") + " FROM t").fetchall()
    assert key == 12704604231530709392


# ---- the archive's Parquet writer (ADR 046) ------------------------------------------------------------
def _archive(tmp_path, parquet: str) -> dict[str, list[str]]:
    return {et: write_archive_table(t, tmp_path / parquet, parquet) for et, t in TABLES.items()}


@pytest.mark.parametrize("parquet", ARCHIVE_PARQUET)
def test_archive_files_hold_the_events(tmp_path, parquet):
    """Each archive file read back by Arrow and by DuckDB SQL is its input, row for row (a
    multiset difference both ways, DuckDB equating NaNs), with the schema and its event type."""
    con = duckdb.connect()
    for event_type, files in _archive(tmp_path, parquet).items():
        table = TABLES[event_type]
        assert len(files) == 1  # the events span one day: one file
        back = pq.read_table(files[0])
        assert same_rows(back, table)
        con.register("t", table)
        cols = ", ".join(f'"{c}"' for c in table.column_names)
        for a, b in ((f"read_parquet('{files[0]}')", "t"), ("t", f"read_parquet('{files[0]}')")):
            assert con.sql(f"SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b}").fetchall() == []


def test_lean_archive_reads_back_as_the_full_one(tmp_path):
    """The backfill's readers (``read_day``, ``read_day_columns``) see the same days either way."""
    _archive(tmp_path, "lean"), _archive(tmp_path, "full")
    for event_type, table in TABLES.items():
        (day,) = days_in(tmp_path / "full", event_type, "2000-01-01", "2100-01-01")
        assert days_in(tmp_path / "lean", event_type, day, day) == [day]
        assert same_rows(read_day(tmp_path / "lean", event_type, day), read_day(tmp_path / "full", event_type, day))
        cols = ["exchange", "symbol", "event_time", "price"] if "price" in table.column_names else \
            ["exchange", "symbol", "event_time"]
        lean = read_day_columns(tmp_path / "lean", event_type, day, cols, ("exchange", "symbol"))
        full = read_day_columns(tmp_path / "full", event_type, day, cols, ("exchange", "symbol"))
        assert lean.equals(full) or same_rows(lean, full)


def test_lean_archive_files_encode_as_documented(tmp_path):
    """"lean": dictionary pages for the string columns only, statistics for the others only;
    "full": both for every column (Arrow's defaults, as before ADR 046)."""
    for parquet in ARCHIVE_PARQUET:
        path = _archive(tmp_path, parquet)["trade"][0]
        meta = pq.ParquetFile(path).metadata
        for i in range(meta.num_columns):
            chunk = meta.row_group(0).column(i)
            is_string = chunk.physical_type == "BYTE_ARRAY"
            dictionary = chunk.dictionary_page_offset is not None
            has_stats = chunk.is_stats_set and chunk.statistics.has_min_max
            if chunk.path_in_schema in ("expiry", "trade_id"):  # all null: no min/max to keep
                has_stats = chunk.is_stats_set
            if parquet == "full":
                assert dictionary and has_stats, chunk.path_in_schema
            else:
                assert dictionary == is_string and has_stats == (not is_string), chunk.path_in_schema
    with pytest.raises(ValueError, match="LIQSTREAM_ARCHIVE_PARQUET"):
        parquet_options(TABLES["trade"].schema, "fast")


# ---- the pass's dedupe: with and without copies in the cycle (ADR 046's shortcut) ----------------------
def _reference_kept(table: pa.Table, committed: set[int]) -> list[int]:
    """Row indices the rule keeps, by plain Python: per key the copy at the lowest (topic,
    partition, offset), none if the key is committed; in input order."""
    rows = table.select([KEY, "_topic", "_partition", "_offset"]).to_pylist()
    first: dict[int, int] = {}
    for i, r in enumerate(rows):
        j = first.get(r[KEY])
        if j is None or (r["_topic"], r["_partition"], r["_offset"]) < tuple(rows[j][c] for c in ("_topic", "_partition", "_offset")):
            first[r[KEY]] = i
    return sorted(i for k, i in first.items() if k not in committed)


@pytest.mark.parametrize("copies", [False, True])
@pytest.mark.parametrize("n_committed", [0, 25])
def test_drop_duplicates_keeps_the_first_copies(tmp_path, copies, n_committed):
    con = duckdb.connect()
    tables = {}
    for event_type, table in TABLES.items():
        path = tmp_path / f"{event_type}.arrow"
        with pa.ipc.new_file(str(path), table.schema) as w:
            w.write_table(table)
        keyed = read_keyed(str(path), True, con)[1]
        if copies:  # a replay: rows again at later offsets, ahead of their originals in input order
            again = keyed.slice(100, 300)
            again = again.set_column(again.schema.get_field_index("_offset"), "_offset",
                                     pc.add(again["_offset"], 1_000_000))
            keyed = pa.concat_tables([again, keyed])
        tables[event_type] = keyed
    committed = {et: set(t[KEY].to_pylist()[-n_committed:]) if n_committed else set() for et, t in tables.items()}
    asked = []

    def seen(keys: pa.Array) -> pa.Array:
        asked.append(keys)
        pool = set().union(*committed.values())
        return pa.array(sorted({k for k in keys.to_pylist() if k in pool}), pa.uint64())

    kept, dropped = drop_duplicates(tables, seen, tmp_path / "out")
    assert len(asked) == 1  # one lookup of the committed keys for the cycle (ADR 062)
    want_dropped = 0
    for event_type, table in tables.items():
        want = _reference_kept(table, committed[event_type])
        want_dropped += table.num_rows - len(want)
        if want:
            assert same_rows(kept[event_type], table.take(pa.array(want, pa.int64())).drop_columns([KEY]))
        else:  # every event of the type committed before: no table, as the graph yields no batch
            assert event_type not in kept
    assert dropped == want_dropped and (dropped > 0) == (copies or n_committed > 0)
    # the key files: the kept events' keys and event times, each once
    got = con.sql(f"SELECT key, event_time_us FROM read_parquet('{tmp_path / 'out'}/event_keys-*.parquet') "
                  "ORDER BY ALL").fetchall()
    want_keys = sorted((r[KEY], r["event_time"]) for et, t in tables.items()
                       for r in t.take(pa.array(_reference_kept(t, committed[et]), pa.int64()))
                       .select([KEY, "event_time"]).to_pylist())
    assert got == want_keys
    assert con.sql(f"SELECT typeof(key), typeof(event_time_us) FROM read_parquet('{tmp_path / 'out'}/event_keys-*.parquet') "
                   "LIMIT 1").fetchall() == [("UBIGINT", "BIGINT")]


def _reference_first_copies(rows: list[dict], position: list[str]) -> list[int]:
    """Row indices of each key's first copy by plain Python: the lowest position, a null after any
    value (DuckDB's ``ORDER BY`` nulls last), ties (no position) the earlier row; in input order."""
    def order(i: int) -> tuple:
        return (*((rows[i][c] is None, rows[i][c] or 0) for c in position), i)

    first: dict[int, int] = {}
    for i, r in enumerate(rows):
        j = first.get(r[KEY])
        if j is None or order(i) < order(j):
            first[r[KEY]] = i
    return sorted(first.values())


@pytest.mark.parametrize("position", [["_topic", "_partition", "_offset"], ["_partition", "_offset"], []])
def test_first_copies_order_by_position_nulls_last_then_input_order(tmp_path, position):
    """Copies in 2-4 places with positions that tie, are null, or are missing (a table without
    position columns keeps its earliest row): the kept rows are the reference's (ADR 062)."""
    rng = np.random.default_rng(3)
    n = 3_000
    keys = rng.integers(0, 900, size=n).astype(np.uint64)  # most keys 2-4 times
    cols = {KEY: pa.array(keys, pa.uint64()), "event_time": pa.array(np.arange(n, dtype=np.int64)),
            "v": pa.array(rng.normal(size=n))}
    if "_topic" in position:
        cols["_topic"] = pa.array(rng.choice(["b.v1", "a.v1", None], size=n).tolist(), pa.string())
    if "_partition" in position:
        part = rng.integers(0, 3, size=n)
        cols["_partition"] = pa.array(part, pa.int32(), mask=rng.random(n) < 0.05)
        cols["_offset"] = pa.array(rng.integers(0, 50, size=n), pa.int64(), mask=rng.random(n) < 0.05)
    table = pa.table(cols)
    table = pa.Table.from_batches(table.to_batches(max_chunksize=700))  # several chunks
    want = _reference_first_copies(table.to_pylist(), position)
    kept, dropped = drop_duplicates({"trade": table}, None, tmp_path / "out")
    assert dropped == n - len(want) > 0
    assert same_rows(kept["trade"], table.take(pa.array(want, pa.int64())).drop_columns([KEY]))
    got = duckdb.sql(f"SELECT key FROM read_parquet('{tmp_path / 'out'}/event_keys-*.parquet') ORDER BY key").fetchall()
    assert [k for (k,) in got] == sorted({int(k) for k in keys})


# ---- the archive written by a thread while the marts are computed (JobSettings.events_pass_archive_thread)
PLAIN = synth_tables(20_000, SYNTH_START_US, 600_000_000, 11)  # the marts need finite prices and sizes


def _pass_outputs(tmp_path, name: str, thread: bool) -> dict[str, list[pa.Table]]:
    files = []
    for event_type, table in PLAIN.items():
        path = tmp_path / f"{name}-{event_type}.arrow"
        with pa.ipc.new_file(str(path), table.schema) as w:
            w.write_table(table)
        files.append(str(path))
    out = tmp_path / name
    counts = run_events_pass(Fetched(files=files, records=sum(t.num_rows for t in PLAIN.values())), out,
                             60_000_000, None, [], True, None, 60_000_000, "lean", thread)
    assert counts == {"duplicates_dropped": 0}
    got: dict[str, list[pa.Table]] = {}
    for f in sorted(out.rglob("*.parquet")):  # by folder and file name without its uuid
        rel = f.relative_to(out)
        got.setdefault(f"{rel.parent}/{rel.name.rsplit('-', 1)[0]}", []).append(pq.read_table(f))
    for tables in got.values():  # the uuids order a name's files at random: by content instead
        tables.sort(key=lambda t: (t.num_rows, repr(t.slice(0, 1).to_pylist())))
    return got


def test_the_archive_thread_writes_the_same_files(tmp_path):
    one_by_one, threaded = _pass_outputs(tmp_path, "seq", False), _pass_outputs(tmp_path, "thread", True)
    assert sorted(one_by_one) == sorted(threaded)
    names = set(one_by_one)
    assert {"./bars_1m", "./liquidations_1m", "./event_keys"} <= names
    assert {n.split("/")[1] for n in names if n.startswith("archive/")} == set(PLAIN)
    for name, tables in one_by_one.items():
        assert len(tables) == len(threaded[name])
        for a, b in zip(tables, threaded[name], strict=True):
            assert a.equals(b, check_metadata=True), name


def test_an_archive_thread_error_is_the_pass_error(tmp_path, monkeypatch):
    import pipelines.events_pass as ep

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ep, "write_archive", broken)
    with pytest.raises(OSError, match="disk full"):
        _pass_outputs(tmp_path, "thread", True)


def test_settings_refuse_unknown_writer_modes():
    assert JobSettings.from_env({}).archive_parquet == "lean"
    assert JobSettings.from_env({"LIQSTREAM_ARCHIVE_PARQUET": "full"}).archive_parquet == "full"
    assert JobSettings.from_env({"LIQSTREAM_EVENTS_PASS_ARCHIVE_THREAD": "1"}).events_pass_archive_thread == 1
    with pytest.raises(ValueError, match="LIQSTREAM_ARCHIVE_PARQUET"):
        JobSettings.from_env({"LIQSTREAM_ARCHIVE_PARQUET": "snappy"})
    with pytest.raises(ValueError, match="LIQSTREAM_EVENTS_PASS_ARCHIVE_THREAD"):
        JobSettings.from_env({"LIQSTREAM_EVENTS_PASS_ARCHIVE_THREAD": "2"})


@pytest.mark.parametrize("files_per_partition", [True, False])
def test_the_archive_splits_a_cycle_by_partition_and_day(tmp_path, files_per_partition):
    """A cycle of 3 partitions over 2 UTC days: one file per partition and day, each one
    partition's increasing offsets (the backfill's fast path), together the kept events (DuckDB).
    Fetched files of one partition each (the readers' files: regrouped without a copy) or of
    mixed partitions (sorted by partition)."""
    from bench.events_pass import _spread

    day_us = 86_400_000_000
    start = SYNTH_START_US // day_us * day_us + day_us - 300_000_000  # 5 minutes before midnight
    tables = {et: _spread(t, 3) for et, t in synth_tables(6_000, start, 600_000_000, 5).items()}
    files = []
    for event_type, table in tables.items():  # a fetch's files: partitions interleaved
        batches = table.to_batches(max_chunksize=700)
        if files_per_partition:
            per = [table.filter(pc.equal(table["_partition"], p)).to_batches(max_chunksize=700) for p in range(3)]
            batches = [b for row in itertools.zip_longest(*per) for b in row if b is not None]
        for i, batch in enumerate(batches):
            path = tmp_path / f"{event_type}-{i}.arrow"
            with pa.ipc.new_file(str(path), table.schema) as w:
                w.write_batch(batch)
            files.append(str(path))
    run_events_pass(Fetched(files=files, records=6_000), tmp_path / "out", 60_000_000, None, [], True, None,
                    60_000_000)
    archive_dir = tmp_path / "out" / "archive"
    con = duckdb.connect()
    for event_type, table in tables.items():
        days = days_in(archive_dir, event_type, "2000-01-01", "2100-01-01")
        assert len(days) == 2
        written = sorted((archive_dir / event_type).rglob("*.parquet"))
        pairs = set(zip(table["_partition"].to_pylist(), (t // day_us for t in table["event_time"].to_pylist()),
                        strict=True))
        assert len(written) == len(pairs) and len({p for p, _ in pairs}) == 3
        for f in written:
            t = pq.read_table(f)
            assert len(set(t["_partition"].to_pylist())) == 1
            assert all(a < b for a, b in zip(t["_offset"].to_pylist(), t["_offset"].to_pylist()[1:], strict=False))
        for day in days:
            assert archive._disjoint_order([str(f) for f in written if f"date={day}" in str(f)]) is not None
        con.register("t", table)
        cols = ", ".join(f'"{c}"' for c in table.column_names)
        for day in days:
            got = read_day(archive_dir, event_type, day)
            want = con.sql(f"SELECT {cols} FROM t WHERE strftime(make_timestamp(event_time), '%Y-%m-%d') = '{day}' "
                           "ORDER BY _topic, _partition, _offset").to_arrow_table()
            assert same_rows(got.select(table.column_names).cast(want.schema), want)
