-- title: Latest data-quality verdicts
-- answers: Did the last Great Expectations checkpoint of each suite pass, and which expectations failed?
-- columns:
--   suite: expectation suite (named after the table it guards)
--   table_name: the table checked
--   verdict: PASS, FAIL (a critical suite failed: its load is quarantined) or WARN (a non-critical suite failed)
--   successful: expectations that passed
--   evaluated: expectations evaluated
--   failed_expectations: expectation types that failed (comma-separated)
--   checked_at: when the checkpoint ran (UTC)
--   run_id: the run (load, stream cycle, backfill) that ran it; see pipeline_runs
-- source: dq_results, the latest row per suite.
SELECT suite,
       table_name,
       CASE WHEN success THEN 'PASS' WHEN critical THEN 'FAIL' ELSE 'WARN' END AS verdict,
       successful,
       evaluated,
       failed_expectations,
       checked_at,
       run_id
FROM dq_results
QUALIFY row_number() OVER (PARTITION BY suite ORDER BY checked_at DESC, run_id DESC) = 1
ORDER BY suite
