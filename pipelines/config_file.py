"""Configuration files: the same names as the environment variables, lowest precedence.

A TOML file of ``NAME = value`` pairs, where NAME is an environment variable liqstream reads
(``KAFKA_BOOTSTRAP_SERVERS``, ``LIQSTREAM_DB``, ``LIQSTREAM_FLOOR_USD_SYMBOL``, ...). Precedence:
command-line flag > environment variable > config file > built-in default. The file is
``--config FILE``, else ``$LIQSTREAM_CONFIG``, else ``./liqstream.toml`` when it exists.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULT_FILE = Path("liqstream.toml")
PREFIXES = ("KAFKA_", "LIQSTREAM_")


class ConfigFileError(ValueError):
    pass


def find_config(explicit: str | None, environ: dict[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("LIQSTREAM_CONFIG"):
        return Path(env["LIQSTREAM_CONFIG"])
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


def apply_config(path: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set each setting of the file that the environment does not set already; returns what was set."""
    env = os.environ if environ is None else environ
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None
    applied = {}
    for name, value in doc.items():
        if not name.startswith(PREFIXES) or isinstance(value, (dict, list)):
            raise ConfigFileError(
                f"config file {path}: {name!r} is not a setting; use the environment variable names, "
                f"e.g. KAFKA_BOOTSTRAP_SERVERS = \"host:9092\" or LIQSTREAM_DB = \"data/liqstream.duckdb\"")
        if name not in env:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
            applied[name] = env[name]
    return applied
