-- title: Largest cascades
-- answers: Which cascade episodes force-closed the most USD of positions, and how hard did they hit price and open interest?
-- columns:
--   scope: base asset (BTC, ETH, ...) or 'market' (all bases together)
--   direction: long_liquidation (longs closed, price falling) or short_squeeze (shorts closed, price rising)
--   start_ts: first hot minute of the episode (UTC)
--   minutes: duration in minutes (start to the close of the last hot minute)
--   liquidated_usd: USD of the episode's own side liquidated over the episode
--   liq_count: liquidation messages (both sides) over the episode
--   severity: liquidated_usd / threshold_usd (the OI-relative episode threshold)
--   price_move_pct: (price extreme / price before the start - 1) x 100
--   oi_change_pct: open-interest change from the minute before the start to the end, %
--   status: open (may still grow) or closed
--   episode_id: stable id (sha1 of scope, direction, start)
-- source: v_cascades_latest (quarantined loads hidden); 20 largest by liquidated_usd.
SELECT scope,
       direction,
       start_ts,
       duration_minutes AS minutes,
       CASE direction WHEN 'long_liquidation' THEN long_liq_usd ELSE short_liq_usd END AS liquidated_usd,
       liq_count,
       severity,
       drawdown_pct AS price_move_pct,
       oi_change_pct,
       status,
       episode_id
FROM v_cascades_latest
ORDER BY liquidated_usd DESC, start_ts, scope, direction
LIMIT 20
