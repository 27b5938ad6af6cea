-- liqstream core tables. Grain and keys are stated per table; see docs/marts.md.

-- grain: one row per applied migration. key: version
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        VARCHAR NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- grain: one row per Kafka topic partition the jobs consume. key: (topic, partition)
-- next_offset is committed in the same transaction as the mart rows it produced (exactly once).
CREATE TABLE IF NOT EXISTS kafka_offsets (
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    next_offset  BIGINT NOT NULL,
    cluster_id   VARCHAR NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, "partition")
);

-- grain: one row per exchange, symbol, liquidated position side and UTC minute (event time).
-- key: (exchange, symbol, side, minute)
CREATE TABLE IF NOT EXISTS liquidations_1m (
    exchange          VARCHAR NOT NULL,
    symbol            VARCHAR NOT NULL,
    side              VARCHAR NOT NULL,      -- long | short: the side of the positions closed
    minute            TIMESTAMPTZ NOT NULL,  -- window start, UTC
    base              VARCHAR NOT NULL,
    quote             VARCHAR NOT NULL,
    liq_count         BIGINT NOT NULL,
    notional_usd      DECIMAL(24, 6) NOT NULL,
    max_notional_usd  DECIMAL(24, 6) NOT NULL,
    first_event_time  TIMESTAMPTZ NOT NULL,
    last_event_time   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (exchange, symbol, side, minute)
);

-- grain: one row per rejected Kafka message (a dead letter from a .dlq topic, or a value
-- that could not be decoded). key: (topic, partition, "offset")
CREATE TABLE IF NOT EXISTS rejects (
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    exchange     VARCHAR,
    event_type   VARCHAR,
    reason       VARCHAR NOT NULL,
    detail       VARCHAR,
    source       VARCHAR,
    received_at  TIMESTAMPTZ,
    raw          BLOB,
    PRIMARY KEY (topic, "partition", "offset")
);

-- grain: one row per job run (a load, a streaming cycle, a backfill). key: run_id
CREATE TABLE IF NOT EXISTS pipeline_runs (
    run_id        VARCHAR PRIMARY KEY,
    job           VARCHAR NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    status        VARCHAR NOT NULL,       -- ok | failed | dq_failed | empty
    events_in     BIGINT,
    rejects_in    BIGINT,
    rows_written  BIGINT,
    duration_s    DOUBLE,
    offsets       JSON,                   -- consumed ranges
    message       VARCHAR
);

-- grain: one row per (run, expectation suite) checkpoint result. key: (run_id, suite)
CREATE TABLE IF NOT EXISTS dq_results (
    run_id        VARCHAR NOT NULL,
    suite         VARCHAR NOT NULL,
    table_name    VARCHAR NOT NULL,
    checked_at    TIMESTAMPTZ NOT NULL,
    success       BOOLEAN NOT NULL,
    critical      BOOLEAN NOT NULL,       -- a failed critical suite quarantines the load
    evaluated     INTEGER NOT NULL,
    successful    INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    failed_expectations VARCHAR,          -- comma-separated expectation types that failed
    result        JSON NOT NULL,          -- the Great Expectations validation result
    PRIMARY KEY (run_id, suite)
);
