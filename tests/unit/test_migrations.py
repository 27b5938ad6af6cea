"""The mart migrations: one version each, applied in order to an empty database, idempotent."""

from __future__ import annotations

import duckdb
import pytest

from pipelines import warehouse


def test_migration_versions_are_unique_and_apply_once():
    versions = [v for v, _, _ in warehouse.migrations()]
    assert versions == sorted(set(versions))
    con = duckdb.connect()
    assert warehouse.migrate(con) == versions
    assert warehouse.migrate(con) == []  # nothing left to apply
    assert [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == versions


def test_two_migrations_sharing_a_version_are_refused(tmp_path, monkeypatch):
    for name in ("0001_a.sql", "0002_b.sql", "0002_c.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    monkeypatch.setattr(warehouse, "MARTS_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=r"share version numbers \[2\]"):
        warehouse.migrations()
