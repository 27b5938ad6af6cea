-- The liquidation map's crossing removes only the part of the low's / high's bucket the price
-- reached (ADR 034): per venue book, where in its frontier bucket the deepest crossing so far lies
-- (grid coordinates), carried across cycles with the books. NULL (states from before) takes the
-- frontiers from the stored books, as before.
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS edge_long DOUBLE;
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS edge_short DOUBLE;
