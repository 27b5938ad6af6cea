"""infra/: runner option files, schedules (crontab + retry wrapper + Airflow DAG), compose and
Prometheus files are valid and agree with the code they drive. Airflow is not installed: the DAG is
compiled and read with ast, and its task logic runs against stub airflow modules."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
WRAPPER = INFRA / "schedules" / "backfill-yesterday.sh"
DAG_FILE = INFRA / "schedules" / "airflow_dag.py"


# ---- YAML files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["runner/flink.yaml", "runner/dataflow.yaml", "docker-compose.yml",
                                  "prometheus.yml", "prometheus-alerts.yml"])
def test_yaml_files_parse(name: str) -> None:
    doc = yaml.safe_load((INFRA / name).read_text())
    assert isinstance(doc, dict) and doc


def test_flink_options_become_beam_pipeline_options() -> None:
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, StandardOptions

    from pipelines.production import options_from_yaml

    flags = options_from_yaml(INFRA / "runner" / "flink.yaml",
                              {"FLINK_MASTER": "jm.internal:8081", "LIQSTREAM_SDK_IMAGE": "reg/liqstream:1"})
    opts = PipelineOptions(flags)
    flink = opts.view_as(FlinkRunnerOptions)
    assert flink.flink_master == "jm.internal:8081"
    assert flink.parallelism == 12 and flink.flink_submit_uber_jar is True
    assert flink.flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS  # one the pinned Beam runs on
    std = opts.view_as(StandardOptions)
    assert std.runner == "FlinkRunner" and std.streaming is True
    # Java-side Flink options travel as flags (forwarded to the runner with the uber jar)
    assert "--checkpointing_interval=60000" in flags and "--checkpointing_mode=EXACTLY_ONCE" in flags
    assert "--environment_config=reg/liqstream:1" in flags


def test_dataflow_options_need_the_project_and_expand_env() -> None:
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        PipelineOptions,
        StandardOptions,
        WorkerOptions,
    )

    from pipelines.production import options_from_yaml

    env = {"GCP_PROJECT": "risk-prod", "LIQSTREAM_BUCKET": "lq-bucket", "LIQSTREAM_SDK_IMAGE": "ar/liqstream:1",
           "LIQSTREAM_SERVICE_ACCOUNT": "lq@risk-prod.iam.gserviceaccount.com"}
    flags = options_from_yaml(INFRA / "runner" / "dataflow.yaml", env)
    assert not any(f.startswith("--subnetwork") for f in flags)  # ${GCP_SUBNETWORK:-} empty: left out
    opts = PipelineOptions(flags)
    gcp = opts.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("risk-prod", "europe-west1", "gs://lq-bucket/tmp")
    assert gcp.enable_streaming_engine is True
    workers = opts.view_as(WorkerOptions)
    assert workers.max_num_workers == 6 and workers.sdk_container_image == "ar/liqstream:1"
    assert "use_runner_v2" in opts.view_as(DebugOptions).experiments
    assert opts.view_as(StandardOptions).streaming is True
    with pytest.raises(KeyError, match="GCP_PROJECT"):
        options_from_yaml(INFRA / "runner" / "dataflow.yaml", {})


# ---- crontab ------------------------------------------------------------------------------------
_FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _field_ok(field: str, lo: int, hi: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not step.isdigit():
            return False
        if base == "*":
            continue
        a, _, b = base.partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            return False
        if not (lo <= int(a) <= hi and (not b or lo <= int(b) <= hi)):
            return False
    return True


def test_crontab_runs_the_wrapper_daily() -> None:
    jobs = []
    for line in (INFRA / "schedules" / "crontab").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        jobs.append(line.split(None, 5))
    assert len(jobs) == 1
    (job,) = jobs
    assert len(job) == 6, job
    fields, command = job[:5], job[5]
    for f, (lo, hi) in zip(fields, _FIELD_RANGES, strict=True):
        assert _field_ok(f, lo, hi), f
    minute, hour, dom, month, dow = fields
    assert minute.isdigit() and hour.isdigit() and (dom, month, dow) == ("*", "*", "*")  # once a day
    assert "infra/schedules/backfill-yesterday.sh" in command
    assert os.access(WRAPPER, os.X_OK)


def test_crontab_dask_alternative_passes_flags_the_cli_accepts() -> None:
    from pipelines.cli import build_parser

    (line,) = [ln for ln in (INFRA / "schedules" / "crontab").read_text().splitlines() if "--runner dask" in ln]
    flags = line.split("backfill-yesterday.sh", 1)[1].split(">>", 1)[0].split()
    args = build_parser().parse_args(["backfill", "--from", "2026-03-01", *flags])
    assert (args.runner, args.dask_scheduler, args.staging) == \
        ("dask", "tcp://dask-scheduler.internal:8786", "/mnt/liqstream/staging")


# ---- the retry wrapper --------------------------------------------------------------------------
FAKE_LIQSTREAM = """#!/usr/bin/env bash
# fake liqstream: records its arguments, exits with the next code of $FAKE_CODES (last one repeats)
echo "$*" >> "$FAKE_LOG"
n=$(wc -l < "$FAKE_LOG")
read -r -a codes <<< "$FAKE_CODES"
i=$(( n - 1 < ${#codes[@]} ? n - 1 : ${#codes[@]} - 1 ))
exit "${codes[$i]}"
"""


def run_wrapper(tmp_path: Path, codes: str, retries: int = 3, day: str | None = None) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "liqstream"
    fake.write_text(FAKE_LIQSTREAM)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_CODES": codes,
           "LIQSTREAM_BACKFILL_RETRIES": str(retries), "LIQSTREAM_BACKFILL_BACKOFF_S": "0",
           "LIQSTREAM_BACKFILL_LOCK": str(tmp_path / "backfill.lock")}
    env.pop("LIQSTREAM_BIN", None)
    if day:
        env["LIQSTREAM_BACKFILL_DAY"] = day
    proc = subprocess.run([str(WRAPPER), "--no-dq"], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, proc.stderr


def test_wrapper_retries_transient_failures_then_succeeds(tmp_path) -> None:
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    rc, calls, err = run_wrapper(tmp_path, "1 4 0")
    assert rc == 0, err
    assert calls == [f"backfill --from {yesterday} --to {yesterday} --source archive --no-dq"] * 3
    assert err.count("retrying in") == 2


def test_wrapper_stops_at_once_on_a_failed_dq_gate(tmp_path) -> None:
    rc, calls, err = run_wrapper(tmp_path, "3", day="2026-03-01")
    assert rc == 3
    assert calls == ["backfill --from 2026-03-01 --to 2026-03-01 --source archive --no-dq"]  # no retry
    assert "data-quality" in err


def test_wrapper_gives_up_after_the_retries_with_the_last_code(tmp_path) -> None:
    rc, calls, _ = run_wrapper(tmp_path, "1 1 5", retries=2, day="2026-03-01")
    assert rc == 5 and len(calls) == 3


def test_wrapper_refuses_a_malformed_day(tmp_path) -> None:
    rc, calls, _ = run_wrapper(tmp_path, "0", day="yesterday")
    assert rc == 2 and calls == []


# ---- the Airflow DAG ----------------------------------------------------------------------------
def _const(node: ast.AST, names: dict[str, object]) -> object:
    if isinstance(node, ast.Name):
        return names[node.id]
    return ast.literal_eval(node)


def test_airflow_dag_compiles_and_declares_a_daily_retrying_task() -> None:
    source = DAG_FILE.read_text()
    compile(source, str(DAG_FILE), "exec")
    tree = ast.parse(source)
    names = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    (dag_call,) = [n.context_expr for w in ast.walk(tree) if isinstance(w, ast.With) for n in w.items
                   if isinstance(n.context_expr, ast.Call) and getattr(n.context_expr.func, "id", "") == "DAG"]
    kw = {k.arg: k.value for k in dag_call.keywords}
    assert _const(kw["dag_id"], names) == "liqstream_daily_backfill"
    assert _const(kw["schedule"], names) == "30 0 * * *"
    assert _const(kw["catchup"], names) is False and _const(kw["max_active_runs"], names) == 1
    default_args = kw["default_args"]
    assert isinstance(default_args, ast.Dict)
    args = {ast.literal_eval(k): v for k, v in zip(default_args.keys, default_args.values, strict=True)}
    assert ast.literal_eval(args["retries"]) == 3 and ast.literal_eval(args["retry_exponential_backoff"]) is True
    task_ids = [ast.literal_eval(k.value) for d in ast.walk(tree) if isinstance(d, ast.Call)
                and getattr(d.func, "id", "") == "task" for k in d.keywords if k.arg == "task_id"]
    assert task_ids == ["backfill_previous_day"]


class _Stub:
    """Just enough of airflow for the DAG file to import: DAG is a context manager, @task registers."""

    tasks: dict = {}

    class DAG:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class AirflowException(Exception):
        pass

    class AirflowFailException(AirflowException):
        pass

    @staticmethod
    def task(task_id: str):
        def register(fn):
            _Stub.tasks[task_id] = fn
            return lambda *a, **k: None  # calling it in the DAG body only declares the task
        return register


def test_airflow_task_maps_exit_codes_to_retry_semantics(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "liqstream"
    fake.write_text('#!/usr/bin/env bash\necho "$*" >> "$FAKE_LOG"\nexit "$FAKE_CODE"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("LIQSTREAM_BIN", str(fake))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    sdk = types.ModuleType("airflow.sdk")
    sdk.DAG, sdk.task = _Stub.DAG, _Stub.task
    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowException, exceptions.AirflowFailException = _Stub.AirflowException, _Stub.AirflowFailException
    monkeypatch.setitem(sys.modules, "airflow", types.ModuleType("airflow"))
    monkeypatch.setitem(sys.modules, "airflow.sdk", sdk)
    monkeypatch.setitem(sys.modules, "airflow.exceptions", exceptions)
    spec = importlib.util.spec_from_file_location("liqstream_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = _Stub.tasks["backfill_previous_day"]
    run_start = dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)  # the run of 2026-03-02 00:30

    monkeypatch.setenv("FAKE_CODE", "0")
    assert task(data_interval_start=run_start) == "2026-03-01"
    assert (tmp_path / "calls.log").read_text().split("\n")[0] == \
        "backfill --from 2026-03-01 --to 2026-03-01 --source archive"
    monkeypatch.setenv("FAKE_CODE", "3")
    with pytest.raises(_Stub.AirflowFailException, match="data-quality"):  # fails without retries
        task(data_interval_start=run_start)
    monkeypatch.setenv("FAKE_CODE", "1")
    with pytest.raises(_Stub.AirflowException) as exc:
        task(data_interval_start=run_start)
    assert not isinstance(exc.value, _Stub.AirflowFailException)  # an ordinary, retried failure
    assert module.SCHEDULE == "30 0 * * *"
    # on a Dask cluster (ADR 017): the scheduler and the staging URI become flags
    assert module.runner_flags("dask", {"LIQSTREAM_DASK_SCHEDULER": "tcp://sched:8786",
                                        "LIQSTREAM_STAGING": "s3://lq/staging"}) == \
        ["--runner", "dask", "--dask-scheduler", "tcp://sched:8786", "--staging", "s3://lq/staging"]
    assert module.runner_flags("local", {}) == []


# ---- compose, Prometheus, Dockerfile ------------------------------------------------------------
def test_compose_wires_broker_stream_and_prometheus() -> None:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "replay", "stream", "prometheus", "query"} <= set(services)
    stream = services["stream"]
    assert stream["command"][0] == "stream"
    assert stream["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert services["prometheus"]["network_mode"] == "service:stream"
    assert services["query"]["volumes"] == ["marts:/data:ro"]
    port = stream["command"][stream["command"].index("--metrics-port") + 1]
    prom = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    (scrape,) = prom["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]
    assert scrape["metrics_path"] == "/metrics"


def test_alert_rules_use_metrics_the_stream_job_exports() -> None:
    from pipelines.alerts.delivery import AlertDispatcher
    from pipelines.jobs.stream import StreamHealth
    from pipelines.settings import JobSettings

    health = StreamHealth(extra_metrics=AlertDispatcher(JobSettings()).metrics_lines)
    health.lag[("trades.v1", 0)] = 5
    exported = set(re.findall(r"^(liqstream_[a-z_]+)", health.render(), flags=re.M))
    rules = yaml.safe_load((INFRA / "prometheus-alerts.yml").read_text())["groups"][0]["rules"]
    used = {m for r in rules for m in re.findall(r"liqstream_[a-z_]+", r["expr"])}
    assert used and used <= exported, used - exported


def test_dockerfile_base_image_matches_the_pinned_beam_and_python() -> None:
    import apache_beam

    text = (INFRA / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert base == f"apache/beam_python{py}_sdk:{apache_beam.__version__}"
    assert "-c constraints.txt" in text
