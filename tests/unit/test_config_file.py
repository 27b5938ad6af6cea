"""Config file, environment and flags use the same names; flag > env > file > default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.config_file import ConfigFileError, apply_config, find_config
from tests.conftest import REPO


def test_file_fills_only_what_the_environment_does_not_set(tmp_path):
    cfg = tmp_path / "liqstream.toml"
    cfg.write_text('KAFKA_BOOTSTRAP_SERVERS = "kafka-1:9092"\nLIQSTREAM_DB = "/srv/marts.duckdb"\n'
                   "LIQSTREAM_FLOOR_USD_SYMBOL = 2500000.0\n")
    env = {"LIQSTREAM_DB": "/from/env.duckdb"}
    applied = apply_config(cfg, env)
    assert env == {"LIQSTREAM_DB": "/from/env.duckdb", "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092",
                   "LIQSTREAM_FLOOR_USD_SYMBOL": "2500000.0"}
    assert set(applied) == {"KAFKA_BOOTSTRAP_SERVERS", "LIQSTREAM_FLOOR_USD_SYMBOL"}


def test_unknown_names_and_bad_toml_say_what_to_write(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('bootstrap = "x"\n')
    with pytest.raises(ConfigFileError, match="KAFKA_BOOTSTRAP_SERVERS"):
        apply_config(bad, {})
    bad.write_text("this is = not toml =\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        apply_config(bad, {})
    assert find_config(None, {"LIQSTREAM_CONFIG": str(bad)}) == bad


def test_cli_precedence_flag_over_env_over_file(tmp_path):
    """`liqstream query` reads the database the settings name: file < env < flag."""
    import duckdb

    dbs = {}
    for name in ("file", "env", "flag"):
        dbs[name] = tmp_path / f"{name}.duckdb"
        con = duckdb.connect(str(dbs[name]))
        con.execute(f"CREATE TABLE t AS SELECT '{name}' AS source")
        con.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'LIQSTREAM_DB = "{dbs["file"]}"\n')

    def source(extra_env: dict, *flags: str) -> str:
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("LIQSTREAM_", "KAFKA_"))}
        env.update(extra_env)
        out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--config", str(cfg), "query", *flags,
                              "--format", "csv", "SELECT source FROM t"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[-1]

    assert source({}) == "file"
    assert source({"LIQSTREAM_DB": str(dbs["env"])}) == "env"
    assert source({"LIQSTREAM_DB": str(dbs["env"])}, "--db", str(dbs["flag"])) == "flag"
