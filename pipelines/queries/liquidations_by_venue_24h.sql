-- title: Liquidations by venue, last 24 h
-- answers: How much was liquidated on each venue, by position side, in the 24 hours that end with the data's latest liquidation minute?
-- note: "last 24 h" is measured back from the latest minute in the marts (the data's own clock), not from
--   the wall clock, so a backfilled or replayed day answers the same way as a live one. The window is the
--   1,440 minutes ending with that minute: minute > latest - 24 h. The session variable window_end, when set
--   (`liqstream query --as-of`), ends the window there instead, as in liquidation_totals.
-- columns:
--   exchange: venue id
--   long_usd: USD of long positions force-closed
--   short_usd: USD of short positions force-closed
--   total_usd: long_usd + short_usd
--   share_pct: the venue's share of total_usd across venues, %
--   liquidations: liquidation messages
--   largest_usd: largest single liquidation
--   window_end: close of the latest minute (exclusive end of the window, UTC)
-- source: v_liquidations_1m (quarantined loads hidden).
WITH latest AS (SELECT coalesce(getvariable('window_end')::TIMESTAMPTZ - INTERVAL 1 MINUTE, max(minute)) AS minute
                FROM v_liquidations_1m)
SELECT l.exchange,
       coalesce(sum(l.notional_usd) FILTER (WHERE l.side = 'long'), 0) AS long_usd,
       coalesce(sum(l.notional_usd) FILTER (WHERE l.side = 'short'), 0) AS short_usd,
       sum(l.notional_usd) AS total_usd,
       round(100 * sum(l.notional_usd) / sum(sum(l.notional_usd)) OVER (), 2) AS share_pct,
       sum(l.liq_count) AS liquidations,
       max(l.max_notional_usd) AS largest_usd,
       any_value(latest.minute) + INTERVAL 1 MINUTE AS window_end
FROM v_liquidations_1m AS l, latest
WHERE l.minute > latest.minute - INTERVAL 24 HOUR AND l.minute <= latest.minute
GROUP BY l.exchange
ORDER BY total_usd DESC, l.exchange
