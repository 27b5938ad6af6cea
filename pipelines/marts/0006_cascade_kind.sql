-- Cascade or burst (ADR 011, docs/analytics.md "Cascade or burst"): an episode is a `cascade` only
-- when price moved against the liquidated side beyond the scope's own volatility and in proportion
-- to the USD force-closed; runs that reach the USD threshold without it are `liquidation_burst`.
-- Rows written before this migration were classified by USD alone: they keep kind 'cascade'.
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'cascade';   -- cascade | liquidation_burst
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS price_move_pct DOUBLE;            -- adverse move start -> extreme (%)
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS price_move_z DOUBLE;              -- that move / (vol_1m_pct x sqrt(minutes))
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS move_pct_per_liq_bp DOUBLE;       -- that move per bp of reference OI liquidated
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS vol_1m_pct DOUBLE;                -- the scope's 1-minute volatility before the run
-- alerts: kind = watch (severity_level 0) | liquidation_burst (severity_level -1) | cascade (levels >= 1)
ALTER TABLE cascade_alerts ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'cascade';
UPDATE cascade_alerts SET kind = 'watch' WHERE alert_type = 'watch';

-- cascades only (what the reports and saved queries mean by "cascade"); bursts have their own view
CREATE OR REPLACE VIEW v_cascades_latest AS
SELECT * FROM cascades WHERE NOT quarantined(start_ts) AND kind = 'cascade' ORDER BY start_ts DESC;

-- runs that reached the USD threshold without the price criterion, newest first
CREATE OR REPLACE VIEW v_liquidation_bursts AS
SELECT * FROM cascades WHERE NOT quarantined(start_ts) AND kind = 'liquidation_burst' ORDER BY start_ts DESC;
