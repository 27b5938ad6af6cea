-- title: Contagion leaders
-- answers: Which altcoins are most exposed to a BTC move right now (at the latest scored minute), per trailing window?
-- columns:
--   window_minutes: trailing window of the score (240 = intraday, 1440 = the day)
--   rank: 1 = most exposed altcoin
--   base: the altcoin
--   as_of_ts: the minute the ranking was scored (the latest one of the window)
--   contagion_score: beta x BTC dominance x exposure (unit-free, relative to BTC)
--   beta: to BTC, minute log returns over the window
--   exposure: leverage, funding and liquidation-intensity multiplier
--   leverage_rel_btc: OI in days of volume, relative to BTC's
--   liq_intensity_pct: liquidated USD in the window as % of OI
--   move_pct: the altcoin's move over the window, %
--   expected_move_pct: beta x BTC's move over the window, %
-- source: v_contagion_ranking (the latest as-of minute per window; quarantined loads hidden).
SELECT window_minutes,
       rank,
       base,
       as_of_ts,
       contagion_score,
       beta,
       exposure,
       leverage_rel_btc,
       liq_intensity_pct,
       move_pct,
       expected_move_pct
FROM v_contagion_ranking
ORDER BY window_minutes, rank
