-- Alert delivery (pipelines/alerts, ADR 012). Numbered after the ADR so that migrations added in
-- parallel by other work keep distinct versions.

-- The outbox. grain: one row per alert (episode, severity level) and sink. key: (episode_id, severity_level, sink)
-- Rows are inserted in the transaction that commits the cascade_alerts rows (status pending) and
-- updated by the delivery threads' outcomes; payload is the alert record as committed (epoch
-- micros for times), so a re-send after a crash sends the same record.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    episode_id      VARCHAR NOT NULL,
    severity_level  INTEGER NOT NULL,
    sink            VARCHAR NOT NULL,           -- kafka:<topic> | webhook:<host>#<hash of the URL>
    status          VARCHAR NOT NULL,           -- pending | sent | dead
    attempts        INTEGER NOT NULL,
    enqueued_at     TIMESTAMPTZ NOT NULL,       -- = the record's committed_ts
    delivered_at    TIMESTAMPTZ,                -- sent (or found in the topic) / dead-lettered
    last_error      VARCHAR,                    -- of the last failed attempt (never a secret)
    run_id          VARCHAR NOT NULL,           -- the cycle that committed the alert
    payload         JSON NOT NULL,
    PRIMARY KEY (episode_id, severity_level, sink)
);

-- grain: one row per alert and sink that could not be delivered. key: (episode_id, severity_level, sink)
CREATE TABLE IF NOT EXISTS alert_dead_letters (
    episode_id      VARCHAR NOT NULL,
    severity_level  INTEGER NOT NULL,
    sink            VARCHAR NOT NULL,
    attempts        INTEGER NOT NULL,
    reason          VARCHAR NOT NULL,           -- the last error: HTTP status, timeout, refused
    dead_at         TIMESTAMPTZ NOT NULL,
    payload         JSON NOT NULL,
    PRIMARY KEY (episode_id, severity_level, sink)
);
