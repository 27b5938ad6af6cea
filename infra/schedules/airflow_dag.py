"""Airflow DAG example: rebuild the previous UTC day with `liqstream backfill`, daily, with retries.

Copy this file into the DAGs folder of an Airflow deployment whose workers have liqstream
installed (the image of infra/Dockerfile, or a venv named by LIQSTREAM_BIN). Written against the
TaskFlow API of Airflow 2.7+ / 3.x.

Exit codes of `liqstream backfill`: 0 published; 3 the data-quality gate failed and NOTHING was
published -> the task fails at once, without retries (the same input fails the same way: a human
reads dq_results first); any other non-zero code (broker or disk trouble) -> an ordinary failure
that Airflow retries with exponential backoff.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
from airflow.exceptions import AirflowException, AirflowFailException

DAG_ID = "liqstream_daily_backfill"
#: 00:30 UTC: the previous day is complete in the archive (late events are accepted for
#: allowed_lateness_s = 10 minutes after the watermark)
SCHEDULE = "30 0 * * *"
EXIT_DQ_FAILED = 3
LIQSTREAM_BIN = os.environ.get("LIQSTREAM_BIN", "liqstream")
BACKFILL_SOURCE = os.environ.get("LIQSTREAM_BACKFILL_SOURCE", "archive")
#: "dask": run on the Dask cluster of LIQSTREAM_DASK_SCHEDULER, staging in LIQSTREAM_STAGING
#: (docs/deployment.md "Backfills on a Dask cluster"); the Airflow worker is then only the client
#: (the DuckDB writer and the GX gate), the cluster does the pipelines
BACKFILL_RUNNER = os.environ.get("LIQSTREAM_BACKFILL_RUNNER", "local")


def runner_flags(runner: str = BACKFILL_RUNNER, env: dict[str, str] | None = None) -> list[str]:
    """The `--runner` flags of the backfill command (none for the local runner)."""
    env = dict(os.environ if env is None else env)
    if runner != "dask":
        return []
    return ["--runner", "dask", "--dask-scheduler", env["LIQSTREAM_DASK_SCHEDULER"],
            "--staging", env["LIQSTREAM_STAGING"]]


def run_backfill(day: str, liqstream_bin: str = LIQSTREAM_BIN, source: str = BACKFILL_SOURCE) -> str:
    """Runs `liqstream backfill` for one day; maps its exit code to Airflow's retry semantics."""
    cmd = [liqstream_bin, "backfill", "--from", day, "--to", day, "--source", source, *runner_flags()]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode == EXIT_DQ_FAILED:
        raise AirflowFailException(f"{day}: data-quality gate failed, nothing published (see dq_results); not retried")
    if proc.returncode != 0:
        raise AirflowException(f"{day}: `{' '.join(cmd)}` exited with {proc.returncode}; Airflow retries it")
    return day


with DAG(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),  # noqa: UP017 (Airflow 2 runs on 3.8+)
    catchup=False,
    max_active_runs=1,  # DuckDB has one writer: never two backfills at once
    default_args={
        "owner": "data-eng",
        "retries": 3,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["liqstream", "backfill"],
) as dag:

    @task(task_id="backfill_previous_day")
    def backfill_previous_day(data_interval_start=None) -> str:  # noqa: ANN001 (injected by Airflow)
        # the run at D+1 00:30 covers the interval starting D 00:30: its start date is the previous day
        return run_backfill(data_interval_start.strftime("%Y-%m-%d"))

    backfill_previous_day()
