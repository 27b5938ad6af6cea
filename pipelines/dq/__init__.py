"""Data-quality gates: a Great Expectations suite per table, run through a checkpoint after each load.

Suites are named after the table they guard and declare one expectation per
stated property (``suites.py``). Results are stored in ``dq_results`` (one row
per run and suite, with the full GX validation result as JSON), never printed
and forgotten. Great Expectations takes ~5 s to import, so it is loaded once
per process, on first use (or in a thread: :meth:`DataQuality.warm_up`); a gate that DuckDB
decides alone never loads it (ADR 053).

A validation with ``gx=False`` (the stream job's gates between its full ones) has DuckDB
evaluate the suite's expectations (``sql.py``, ADR 031) and runs GX only when that finds a
failure or cannot state an expectation: GX's fixed ~20-40 ms per expectation is most of a gate.
A failure of a suite whose ``gx_on_failure`` is False (the non-critical freshness suite) is
DuckDB's verdict there too, stored with the rows it checked; GX validates it at the full gates
(ADR 059).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from pipelines.dq.sql import sql_verdict
from pipelines.dq.suites import SUITES, SuiteSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DQResult:
    suite: str
    table: str
    success: bool
    critical: bool
    evaluated: int
    successful: int
    failed_expectations: tuple[str, ...]
    rows_checked: int
    #: who decided: "gx" (a Great Expectations checkpoint) or "duckdb" (``sql.py``: passes, and the
    #: failures of a suite whose ``gx_on_failure`` is False, ADR 059)
    engine: str = "gx"

    @property
    def verdict(self) -> str:
        return "PASS" if self.success else ("FAIL (critical)" if self.critical else "WARN")


def archive_files(archive_dir: Path | None, since_us: int | None) -> list[str]:
    """The normalized-event archive's Parquet files of the days from ``since_us`` on."""
    if archive_dir is None or not Path(archive_dir).exists():
        return []
    first_day = datetime.fromtimestamp((since_us or 0) / 1e6, UTC).strftime("%Y-%m-%d")
    return sorted(str(f) for f in Path(archive_dir).glob("*/date=*/*.parquet")
                  if f.parent.name.split("=", 1)[1] >= first_day)


#: validation results per suite kept in GX's store and shown in Data Docs (dq_results keeps all)
DOCS_HISTORY = 5
#: checked rows stored with a failure DuckDB decides (a suite with ``gx_on_failure`` False, ADR 059):
#: the freshness suite's one row (its staleness), what GX's result would show as the unexpected values
DUCKDB_FAILURE_ROWS = 20


class DataQuality:
    """Runs expectation suites over DuckDB tables with one ephemeral GX context per process."""

    _instance: DataQuality | None = None

    def __init__(self) -> None:
        self._gx_loaded: tuple[Any, Any, Any] | None = None  # (gx, context, data source): _load_gx
        self._gx_lock = threading.Lock()
        self._checkpoints: dict[str, Any] = {}
        self._sites: set[str] = set()
        self._recent: dict[str, list[Any]] = {}
        self._pending_docs: dict[Path, list[Any]] = {}
        self._expectations: dict[str, list[Any]] = {}
        #: GX's context is not thread-safe: the warm-up thread's preparation vs. the job's gate
        self._use = threading.RLock()
        #: monotonic time of the last gate that ran GX on every suite (:func:`pipelines.jobs.load.run_gate`)
        self.last_full_gate: float | None = None

    def _load_gx(self) -> tuple[Any, Any, Any]:
        """Great Expectations' module, ephemeral context and pandas data source, loaded on first use
        (ADR 053): a gate that DuckDB decides (``gx=False`` and a pass) never needs them."""
        with self._gx_lock:
            if self._gx_loaded is None:
                os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
                import great_expectations as gx

                for name in list(logging.root.manager.loggerDict):
                    if name.startswith("great_expectations"):
                        logging.getLogger(name).setLevel(logging.WARNING)
                ctx = gx.get_context(mode="ephemeral")
                try:
                    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
                except Exception:  # older/newer GX: progress bars are cosmetic
                    pass
                self._gx_loaded = (gx, ctx, ctx.data_sources.add_pandas("liqstream"))
            return self._gx_loaded

    @property
    def _gx(self) -> Any:
        return self._load_gx()[0]

    @property
    def _ctx(self) -> Any:
        return self._load_gx()[1]

    @property
    def _source(self) -> Any:
        return self._load_gx()[2]

    @property
    def gx_loaded(self) -> bool:
        return self._gx_loaded is not None

    _lock = threading.Lock()

    @classmethod
    def shared(cls) -> DataQuality:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def warm_up(cls, suites: list[str] | None = None) -> threading.Thread:
        """Load Great Expectations in a background thread (5-10 s of imports and context set-up)
        while the caller's Beam pipeline runs; a gate that needs GX then waits for it, if still loading.
        With ``suites``, their expectations and checkpoints are built there too (~0.1 s each, else
        on the first gate's path). A failure there is not swallowed: the next ``shared()`` tries
        again and raises."""
        th = threading.Thread(target=lambda: cls._try_shared(suites), name="gx-warm-up", daemon=True)
        th.start()
        return th

    @classmethod
    def _try_shared(cls, suites: list[str] | None = None) -> None:
        try:
            dq = cls.shared()
            dq._load_gx()
            for name in suites or []:
                with dq._use:
                    dq._checkpoint(SUITES[name])
        except Exception:  # reported by the caller's own shared() / validate() call
            pass

    def expectations(self, spec: SuiteSpec) -> list[Any]:
        """The suite's expectations (``suites.Expect``: no GX import), built once per process."""
        exps = self._expectations.get(spec.name)
        if exps is None:
            exps = self._expectations[spec.name] = spec.expectations()
        return exps

    def _site(self, docs_dir: Path) -> str:
        """The Data Docs site writing under ``docs_dir`` (registered once per directory)."""
        docs_dir = docs_dir.resolve()  # GX's filesystem store refuses a relative base_directory (data/ by default)
        name = "liqstream_" + hashlib.sha1(str(docs_dir).encode()).hexdigest()[:10]
        if name not in self._sites:
            docs_dir.mkdir(parents=True, exist_ok=True)
            self._ctx.add_data_docs_site(site_name=name, site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            })
            self._sites.add(name)
        return name

    def _checkpoint(self, spec: SuiteSpec) -> Any:
        cp = self._checkpoints.get(spec.name)
        if cp is None:
            gx = self._gx
            asset = self._source.add_dataframe_asset(spec.name)
            batch = asset.add_batch_definition_whole_dataframe(f"{spec.name}_load")
            suite = self._ctx.suites.add(gx.ExpectationSuite(name=spec.name))
            for expectation in self.expectations(spec):
                suite.add_expectation(expectation.to_gx())
            vd = self._ctx.validation_definitions.add(gx.ValidationDefinition(name=spec.name, data=batch, suite=suite))
            cp = self._ctx.checkpoints.add(gx.Checkpoint(name=f"{spec.name}_checkpoint", validation_definitions=[vd],
                                                         result_format="SUMMARY"))
            self._checkpoints[spec.name] = cp
        return cp

    def _keep_recent(self, suite: str, key: Any) -> None:
        """GX keeps every validation result of the process in its (here in-memory) store: a
        streaming job validating every minute would grow without bound, and each Data Docs build
        would render more. Keep the last ``DOCS_HISTORY`` per suite (dq_results keeps them all)."""
        recent = self._recent.setdefault(suite, [])
        recent.append(key)
        store = self._ctx.validation_results_store
        while len(recent) > DOCS_HISTORY:
            old = recent.pop(0)
            try:
                store.remove_key(old)
            except Exception:  # already gone: nothing to free
                pass

    def publish_docs(self) -> list[Path]:
        """Render the validations since the last call into their Data Docs sites (the pages of
        results no longer kept are removed from the site's index). Returns the sites updated."""
        with self._use:
            return self._publish_docs()

    def _publish_docs(self) -> list[Path]:
        done: list[Path] = []
        if not self._pending_docs:  # nothing GX validated since the last call (GX may not even be loaded)
            return done
        live = set(self._ctx.validation_results_store.list_keys())
        for docs_dir, keys in list(self._pending_docs.items()):
            keys = [k for k in keys if k in live]
            if keys:
                self._ctx.build_data_docs(site_names=[self._site(docs_dir)], resource_identifiers=keys)
                done.append(docs_dir)
            del self._pending_docs[docs_dir]
        return done

    def validate(self, con: duckdb.DuckDBPyConnection, suite: str, run_id: str,
                 where: str | None = None, store: bool = True, since_us: int | None = None,
                 docs_dir: Path | None = None, archive_dir: Path | None = None, gx: bool = True,
                 audit: bool = False) -> DQResult:
        """Validate a table (or the rows ``where`` selects; a derived suite: the rows since
        ``since_us``) and store the result in dq_results. With ``docs_dir``, the result goes to the
        GX Data Docs there (``<docs_dir>/index.html``) at the next :meth:`publish_docs` (one build
        per gate, not one per suite).

        ``gx=False``: DuckDB evaluates the expectations (``sql.py``); a pass is stored as such
        (``engine`` "duckdb", no Data Docs page), and so is a failure of a suite whose
        ``gx_on_failure`` is False (the freshness suite, ADR 059: with a sample of the rows it checked);
        any other failure, or an expectation DuckDB cannot state, runs the GX checkpoint, whose result
        is the one stored. ``audit`` (with ``gx``, the stream
        job's full gates): DuckDB evaluates the suite too and a disagreement with GX is logged as
        an error (GX's verdict stands)."""
        with self._use:
            return self._validate(con, suite, run_id, where, store, since_us, docs_dir, archive_dir, gx, audit)

    def validate_windows(self, con: duckdb.DuckDBPyConnection, suite: str, run_id: str, column: str,
                         bounds: list[tuple[int, int]], docs_dir: Path | None = None) -> DQResult:
        """Validate the rows of a mart whose ``column`` lies in each [from_us, to_us) of ``bounds``
        (a windowed backfill's windows, ADR 036: one window's frame in memory at a time) and store
        one result for the suite: failed where any window failed, ``evaluated`` / ``successful``
        counting expectations (an expectation succeeds when it did in every window), rows summed.
        The suites' expectations are per row, or uniqueness of keys that hold the time column, so
        the verdict is the one of the whole range at once."""
        spec = SUITES[suite]
        checked_at = datetime.now(UTC)
        parts = [self.validate(con, suite, run_id, store=False, docs_dir=docs_dir,
                               where=f"{column} >= make_timestamp({int(a)}) AND {column} < make_timestamp({int(b)})")
                 for a, b in bounds]
        failed = tuple(sorted({f for r in parts for f in r.failed_expectations}))
        evaluated = max((r.evaluated for r in parts), default=0)
        out = DQResult(suite=spec.name, table=spec.table, success=all(r.success for r in parts), critical=spec.critical,
                       evaluated=evaluated, successful=evaluated - len(failed), failed_expectations=failed,
                       rows_checked=sum(r.rows_checked for r in parts))
        doc = {"windows": [{"from_us": a, "to_us": b, "success": r.success, "rows": r.rows_checked,
                            "failed": list(r.failed_expectations)} for (a, b), r in zip(bounds, parts, strict=True)]}
        self._store(con, run_id, spec, checked_at, out, doc)
        return out

    def _validate(self, con: duckdb.DuckDBPyConnection, suite: str, run_id: str, where: str | None, store: bool,
                  since_us: int | None, docs_dir: Path | None, archive_dir: Path | None, gx: bool,
                  audit: bool) -> DQResult:
        spec = SUITES[suite]
        sql = _suite_sql(spec, where, since_us, archive_dir)
        if sql is None:  # nothing archived in the checked days (e.g. a backfill from captures)
            return DQResult(spec.name, spec.table, True, spec.critical, 0, 0, (), 0)
        checked_at = datetime.now(UTC)
        t0 = time.perf_counter()
        fast = None
        if not gx or audit:
            try:
                fast = sql_verdict(con, sql, self.expectations(spec))
            except Exception:  # a check that cannot run: GX runs it below and reports why
                fast = None
        fast_s = time.perf_counter() - t0
        if fast is not None and not gx and (fast["success"] or not spec.gx_on_failure):
            failed = tuple(sorted({r["expectation_config"]["type"] for r in fast["results"] if not r["success"]}))
            out = DQResult(suite=spec.name, table=spec.table, success=bool(fast["success"]), critical=spec.critical,
                           evaluated=fast["statistics"]["evaluated_expectations"],
                           successful=fast["statistics"]["successful_expectations"], failed_expectations=failed,
                           rows_checked=fast["rows"], engine="duckdb")
            doc = {**fast, "seconds": round(fast_s, 4)}
            if failed:  # what was found (GX's result lists the unexpected values); GX checks it at a full gate
                try:
                    cur = con.execute(f"SELECT * FROM ({sql}) LIMIT {int(DUCKDB_FAILURE_ROWS)}")
                    names = [d[0] for d in cur.description]
                    doc["rows_checked_sample"] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
                except duckdb.Error as exc:  # the verdict stands without its sample
                    doc["rows_checked_sample_error"] = f"{type(exc).__name__}: {exc}"[:500]
            if store:
                self._store(con, run_id, spec, checked_at, out, doc)
            return out
        try:
            df = con.execute(sql).df()
            result = self._checkpoint(spec).run(batch_parameters={"dataframe": df})
        except Exception as exc:  # a check that cannot run is a failed check, never a crashed job
            doc = {"error": f"{type(exc).__name__}: {exc}"[:2000], "sql": sql}
            out = DQResult(suite=spec.name, table=spec.table, success=False, critical=spec.critical, evaluated=0,
                           successful=0, failed_expectations=("check_error",), rows_checked=0)
        else:
            ((key, vres),) = list(result.run_results.items())
            self._keep_recent(spec.name, key)
            if docs_dir is not None:
                self._pending_docs.setdefault(Path(docs_dir).resolve(), []).append(key)
            doc = vres.to_json_dict()
            stats = doc["statistics"]
            failed = tuple(sorted({r["expectation_config"]["type"] for r in doc["results"] if not r["success"]}))
            out = DQResult(suite=spec.name, table=spec.table, success=bool(vres.success), critical=spec.critical,
                           evaluated=int(stats["evaluated_expectations"]),
                           successful=int(stats["successful_expectations"]),
                           failed_expectations=failed, rows_checked=len(df))
            if fast is not None:
                doc["duckdb_verdict"] = {"success": fast["success"], "failed": sorted(
                    {r["expectation_config"]["type"] for r in fast["results"] if not r["success"]})}
                if fast["success"] != out.success or set(doc["duckdb_verdict"]["failed"]) != set(failed):
                    log.error("suite %s: DuckDB's verdict (%s) differs from GX's (%s) on the same rows; GX's "
                              "stands (pipelines/dq/sql.py states an expectation wrongly)", spec.name,
                              doc["duckdb_verdict"]["failed"] or "pass", list(failed) or "pass")
        if store:
            self._store(con, run_id, spec, checked_at, out, doc)
        return out

    def decided_in_duckdb(self, con: duckdb.DuckDBPyConnection, suite: str, where: str | None = None,
                          since_us: int | None = None, archive_dir: Path | None = None) -> bool:
        """Whether :meth:`validate` with ``gx=False`` would decide the suite without GX: DuckDB finds
        its rows passing, or failing a suite whose failures DuckDB decides (``gx_on_failure`` False,
        ADR 059). Nothing stored, GX never loaded. False when DuckDB cannot state an expectation or
        the check fails to run (GX would then be needed). The stream job asks it to know early
        whether its gate will need GX (ADR 053)."""
        spec = SUITES[suite]
        sql = _suite_sql(spec, where, since_us, archive_dir)
        if sql is None:
            return True
        try:
            fast = sql_verdict(con, sql, self.expectations(spec))
        except Exception:
            return False
        return fast is not None and (bool(fast["success"]) or not spec.gx_on_failure)

    @staticmethod
    def _store(con: duckdb.DuckDBPyConnection, run_id: str, spec: SuiteSpec, checked_at: datetime, out: DQResult,
               doc: dict[str, Any]) -> None:
        con.execute(
            "INSERT OR REPLACE INTO dq_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, spec.name, spec.table, checked_at, out.success, spec.critical, out.evaluated, out.successful,
             out.evaluated - out.successful, ",".join(out.failed_expectations), json.dumps(doc, default=str)],
        )


def _suite_sql(spec: SuiteSpec, where: str | None, since_us: int | None, archive_dir: Path | None) -> str | None:
    """The rows a suite validates: its derived query from ``since_us`` on, or its table (``where``);
    None when a query over the archive has no archived day to read."""
    if spec.query is None:
        return f"SELECT * FROM {spec.table}" + (f" WHERE {where}" if where else "")
    since = f"make_timestamp({int(since_us) if since_us is not None else 0})"
    files: list[str] = []
    if "{archive_files}" in spec.query:
        files = archive_files(archive_dir, since_us)
        if not files:
            return None
    return spec.query.format(since=since, archive_files="[" + ", ".join(f"'{f}'" for f in files) + "]")
