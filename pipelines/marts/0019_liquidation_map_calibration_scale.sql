-- The liquidation map's calibration compares realized with removed USD relative to the ratio seen so
-- far (the map counts all OI as leveraged; ADR 020). Carried across cycles with the books.
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS seen_removed_usd DOUBLE DEFAULT 0;
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS seen_realized_usd DOUBLE DEFAULT 0;
