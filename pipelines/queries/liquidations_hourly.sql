-- title: Liquidations per hour
-- answers: When did liquidations happen, hour by hour, and which side was being closed?
-- columns:
--   hour: UTC hour (start)
--   long_usd: USD of long positions force-closed in the hour, all venues
--   short_usd: USD of short positions force-closed in the hour, all venues
--   total_usd: long_usd + short_usd
--   long_share_pct: long_usd / total_usd x 100
--   liquidations: liquidation messages
--   largest_usd: largest single liquidation in the hour
-- source: v_liquidations_hourly (quarantined loads hidden), oldest hour first.
SELECT hour,
       coalesce(sum(notional_usd) FILTER (WHERE side = 'long'), 0) AS long_usd,
       coalesce(sum(notional_usd) FILTER (WHERE side = 'short'), 0) AS short_usd,
       sum(notional_usd) AS total_usd,
       round(100 * coalesce(sum(notional_usd) FILTER (WHERE side = 'long'), 0) / sum(notional_usd), 2) AS long_share_pct,
       sum(liquidations) AS liquidations,
       max(largest_usd) AS largest_usd
FROM v_liquidations_hourly
GROUP BY hour
ORDER BY hour
