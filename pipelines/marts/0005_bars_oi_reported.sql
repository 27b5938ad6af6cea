-- The venue-reported OI USD beside the derived one, so merging a minute across streaming cycles
-- re-derives close-valued OI from the final close (stream == backfill). Null: the OI message
-- carried no price and oi_*_usd was valued at the minute's close (else the mark).
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS oi_first_usd_reported DOUBLE;
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS oi_last_usd_reported DOUBLE;
