-- title: Liquidation totals, 1 h / 4 h / 12 h / 24 h
-- answers: How much was liquidated on each venue and on each base asset, by position side, over the last 1, 4, 12 and 24 hours?
-- note: the windows end where liquidations_by_venue_24h's does: at the close of the data's latest liquidation
--   minute (the data's own clock, so a replayed day answers like a live one), or at the session variable
--   window_end when it is set (SET VARIABLE window_end = TIMESTAMPTZ '2026-03-10 00:00+00'; `liqstream query
--   --as-of` and `liqstream serve` for a past day set it). A span of N hours holds the minutes in
--   [window_end - N h, window_end). A venue or base without liquidations in a span has no row for it.
--   The live desk (`liqstream serve`) shows exactly these rows.
-- columns:
--   level: 'venue' (one row per exchange) or 'base' (one row per base asset, all venues)
--   name: the exchange (level venue) or the base asset (level base)
--   span: '1h', '4h', '12h' or '24h'
--   long_usd: USD of long positions force-closed in the span
--   short_usd: USD of short positions force-closed in the span
--   total_usd: long_usd + short_usd
--   liquidations: liquidation messages
--   largest_usd: largest single liquidation
--   window_end: exclusive end of every span (UTC)
-- source: v_liquidations_1m (quarantined loads hidden); venues then bases, shortest span first, largest total first.
WITH bounds AS (
    SELECT coalesce(getvariable('window_end')::TIMESTAMPTZ, max(minute) + INTERVAL 1 MINUTE) AS window_end
    FROM v_liquidations_1m
),
spans(span, hours) AS (VALUES ('1h', 1), ('4h', 4), ('12h', 12), ('24h', 24)),
liq AS (
    SELECT s.span, s.hours, l.exchange, l.base, l.side, l.notional_usd, l.liq_count, l.max_notional_usd, b.window_end
    FROM v_liquidations_1m AS l, bounds AS b, spans AS s
    WHERE l.minute >= b.window_end - to_hours(s.hours) AND l.minute < b.window_end
)
SELECT CASE WHEN grouping(exchange) = 0 THEN 'venue' ELSE 'base' END AS level,
       coalesce(exchange, base) AS name,
       span,
       coalesce(sum(notional_usd) FILTER (WHERE side = 'long'), 0) AS long_usd,
       coalesce(sum(notional_usd) FILTER (WHERE side = 'short'), 0) AS short_usd,
       sum(notional_usd) AS total_usd,
       sum(liq_count) AS liquidations,
       max(max_notional_usd) AS largest_usd,
       any_value(window_end) AS window_end
FROM liq
GROUP BY GROUPING SETS ((span, hours, exchange), (span, hours, base))
ORDER BY grouping(exchange), any_value(hours), total_usd DESC, name
