-- The exact sum of a bar's trade sizes (1e-12 base units), so merging a minute across streaming
-- cycles gives the same volume_base as one pass (issue 23: the float sum differed in its last bits
-- in 64 of 44,647 bars). volume_base stays the analysts' DOUBLE: the nearest double of this sum.
-- Null: a bar stored before this column; its next merge starts from volume_base.
ALTER TABLE bars_1m ADD COLUMN IF NOT EXISTS volume_base_exact DECIMAL(38, 12);
