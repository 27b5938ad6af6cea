"""liqstream Beam pipelines: composite transforms, jobs, mart DDL and data-quality suites."""
