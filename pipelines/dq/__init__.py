"""Data-quality gates: a Great Expectations suite per table, run through a checkpoint after each load.

Suites are named after the table they guard and declare one expectation per
stated property (``suites.py``). Results are stored in ``dq_results`` (one row
per run and suite, with the full GX validation result as JSON), never printed
and forgotten. Great Expectations takes ~5 s to import, so it is loaded once
per process, on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from pipelines.dq.suites import SUITES, SuiteSpec


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


class DataQuality:
    """Runs expectation suites over DuckDB tables with one ephemeral GX context per process."""

    _instance: DataQuality | None = None

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import logging

        import great_expectations as gx

        for name in list(logging.root.manager.loggerDict):
            if name.startswith("great_expectations"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self._gx = gx
        self._ctx = gx.get_context(mode="ephemeral")
        try:
            self._ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
        except Exception:  # older/newer GX: progress bars are cosmetic
            pass
        self._source = self._ctx.data_sources.add_pandas("liqstream")
        self._checkpoints: dict[str, Any] = {}
        self._sites: set[str] = set()
        self._recent: dict[str, list[Any]] = {}
        self._pending_docs: dict[Path, list[Any]] = {}

    _lock = threading.Lock()

    @classmethod
    def shared(cls) -> DataQuality:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def warm_up(cls) -> threading.Thread:
        """Load Great Expectations in a background thread (5-10 s of imports and context set-up)
        while the caller's Beam pipeline runs; :meth:`shared` then waits for it, if still loading.
        A failure there is not swallowed: the next ``shared()`` tries again and raises."""
        th = threading.Thread(target=lambda: cls._try_shared(), name="gx-warm-up", daemon=True)
        th.start()
        return th

    @classmethod
    def _try_shared(cls) -> None:
        try:
            cls.shared()
        except Exception:  # reported by the caller's own shared() call
            pass

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
            for expectation in spec.expectations():
                suite.add_expectation(expectation)
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
        done = []
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
                 docs_dir: Path | None = None, archive_dir: Path | None = None) -> DQResult:
        """Validate a table (or the rows ``where`` selects; a derived suite: the rows since
        ``since_us``) and store the result in dq_results. With ``docs_dir``, the result goes to the
        GX Data Docs there (``<docs_dir>/index.html``) at the next :meth:`publish_docs` (one build
        per gate, not one per suite)."""
        spec = SUITES[suite]
        if spec.query is not None:
            since = f"make_timestamp({int(since_us) if since_us is not None else 0})"
            files: list[str] = []
            if "{archive_files}" in spec.query:
                files = archive_files(archive_dir, since_us)
                if not files:  # nothing archived in the checked days (e.g. a backfill from captures)
                    return DQResult(spec.name, spec.table, True, spec.critical, 0, 0, (), 0)
            sql = spec.query.format(since=since, archive_files="[" + ", ".join(f"'{f}'" for f in files) + "]")
        else:
            sql = f"SELECT * FROM {spec.table}" + (f" WHERE {where}" if where else "")
        checked_at = datetime.now(UTC)
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
        if store:
            con.execute(
                "INSERT OR REPLACE INTO dq_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, spec.name, spec.table, checked_at, out.success, spec.critical, out.evaluated, out.successful,
                 out.evaluated - out.successful, ",".join(out.failed_expectations), json.dumps(doc, default=str)],
            )
        return out
