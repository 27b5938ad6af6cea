-- Quarantine and the analyst views.
-- A load whose critical data-quality suite fails is quarantined: its time range is recorded here and
-- every analyst view (v_*) hides rows in it, while the base tables keep them for investigation.
-- A backfill that rebuilds those days and passes its gate lifts the quarantine.

-- grain: one row per quarantined load. key: run_id
CREATE TABLE IF NOT EXISTS quarantine (
    run_id      VARCHAR PRIMARY KEY,
    from_ts     TIMESTAMPTZ NOT NULL,   -- inclusive
    to_ts       TIMESTAMPTZ NOT NULL,   -- exclusive
    suites      VARCHAR NOT NULL,       -- the critical suites that failed
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE MACRO quarantined(ts) AS
    EXISTS (SELECT 1 FROM quarantine q WHERE ts >= q.from_ts AND ts < q.to_ts);

-- one row per exchange, symbol, minute (published rows only)
CREATE OR REPLACE VIEW v_bars_1m AS
SELECT * FROM bars_1m WHERE NOT quarantined(minute_ts);

-- one row per base asset and minute, across venues
CREATE OR REPLACE VIEW v_bars_1m_symbol AS
SELECT * FROM bars_1m_symbol WHERE NOT quarantined(minute_ts);

-- one row per exchange, symbol, side and minute
CREATE OR REPLACE VIEW v_liquidations_1m AS
SELECT * FROM liquidations_1m WHERE NOT quarantined(minute);

-- one row per hour, exchange and side
CREATE OR REPLACE VIEW v_liquidations_hourly AS
SELECT date_trunc('hour', minute) AS hour, exchange, side,
       sum(liq_count) AS liquidations, sum(notional_usd) AS notional_usd, max(max_notional_usd) AS largest_usd
FROM v_liquidations_1m GROUP BY ALL;

-- one row per episode, newest first
CREATE OR REPLACE VIEW v_cascades_latest AS
SELECT * FROM cascades WHERE NOT quarantined(start_ts) ORDER BY start_ts DESC;

-- one row per episode alert
CREATE OR REPLACE VIEW v_cascade_alerts AS
SELECT * FROM cascade_alerts WHERE NOT quarantined(alert_ts);

-- the latest OI delta per level, exchange, symbol and span
CREATE OR REPLACE VIEW v_oi_deltas_latest AS
SELECT * FROM oi_deltas WHERE NOT quarantined(as_of_ts)
QUALIFY row_number() OVER (PARTITION BY level, exchange, symbol, span ORDER BY as_of_ts DESC) = 1;

-- every published OI delta
CREATE OR REPLACE VIEW v_oi_deltas AS
SELECT * FROM oi_deltas WHERE NOT quarantined(as_of_ts);

-- contagion ranking at each as-of time, and the latest one
CREATE OR REPLACE VIEW v_contagion AS
SELECT * FROM contagion WHERE NOT quarantined(as_of_ts);

CREATE OR REPLACE VIEW v_contagion_ranking AS
SELECT * FROM v_contagion
QUALIFY as_of_ts = max(as_of_ts) OVER (PARTITION BY window_minutes)
ORDER BY window_minutes, rank;
