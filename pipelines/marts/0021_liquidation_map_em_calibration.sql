-- The liquidation map's calibration is an online EM over the leverage tiers (ADR 026): per tier, the
-- realized liquidated USD attributed to it and the USD its book removed per unit weight, so far.
-- Carried across cycles with the books; NULL (states from before) starts the sums at 0.
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS em_usd DOUBLE[];
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS em_exposure DOUBLE[];
