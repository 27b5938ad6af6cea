-- Order-book depth per bar (issue 13, ADR 024): the minute's last book_depth.v1 record of the
-- instrument -- USD resting within 100 bp of the mid on each side (null when no record that minute,
-- or when the venue's book view did not reach 100 bp) -- its event time and the minute's count of
-- depth records. The cascade detector carries each venue's depth forward (depth_max_stale_minutes)
-- and sums it per base: the liquidity the forced orders walk.
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS depth_bid_usd_100bp DOUBLE;
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS depth_ask_usd_100bp DOUBLE;
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS depth_ts TIMESTAMPTZ;
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS depth_events BIGINT DEFAULT 0;
