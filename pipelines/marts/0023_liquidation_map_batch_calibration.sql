-- The liquidation map's calibration re-attributes every past crossing (ADR 044): per venue book, the
-- sums of the non-negative least squares fit of realized USD on the USD each leverage tier removed
-- per unit weight: sum u u^T (tiers x tiers, row-major) and sum u R (tiers), over the crossings so
-- far. Carried across cycles with the books; NULL (states from before) starts the sums at 0.
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS nnls_gram DOUBLE[];
ALTER TABLE liquidation_map_state ADD COLUMN IF NOT EXISTS nnls_moment DOUBLE[];
