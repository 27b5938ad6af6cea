-- title: Biggest open-interest drops (1 h)
-- answers: Where did open interest fall the most within an hour, i.e. where was leverage flushed out?
--   One row per series (a venue symbol, a base across venues, or the whole market): its worst 1-hour drop.
-- columns:
--   level: venue (one venue symbol), symbol (a base across its perpetual venues) or market
--   exchange: venue id ('all' for symbol and market levels)
--   symbol: venue symbol, base, or 'market'
--   as_of_ts: end of the hour (UTC)
--   oi_start_usd: open interest one hour before as_of_ts, USD
--   oi_end_usd: open interest at as_of_ts, USD
--   oi_change_usd: oi_end_usd - oi_start_usd (negative: a drop)
--   oi_change_pct: oi_change_usd / oi_start_usd x 100
--   price_change_pct: price change over the same hour, %
--   regime: deleveraging (OI and price down) | short_squeeze (OI down, price up) | ...
-- source: v_oi_deltas, span '1h' (quarantined loads hidden); 20 largest USD drops.
SELECT level,
       exchange,
       symbol,
       as_of_ts,
       oi_start_usd,
       oi_end_usd,
       oi_change_usd,
       oi_change_pct,
       price_change_pct,
       regime
FROM v_oi_deltas
WHERE span = '1h' AND oi_change_usd < 0
QUALIFY row_number() OVER (PARTITION BY level, exchange, symbol ORDER BY oi_change_usd, as_of_ts) = 1
ORDER BY oi_change_usd, level, exchange, symbol
LIMIT 20
