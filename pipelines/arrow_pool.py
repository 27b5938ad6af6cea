"""Arrow's default memory pool for a job's processes (ADR 047)."""

from __future__ import annotations

import os

import pyarrow as pa

POOLS = ("system", "jemalloc", "mimalloc")


def use_arrow_pool(name: str, setting: str = "the Arrow memory pool") -> str:
    """Make ``name`` (one of :data:`POOLS`) Arrow's default memory pool for this process, the
    processes it forks after, and those it spawns (they read ARROW_DEFAULT_MEMORY_POOL as pyarrow
    loads); "" changes nothing. Buffers allocated before stay with their pool. Returns the backend
    now in use. An unknown name, or a pool this pyarrow build lacks, is an error that names
    ``setting`` and the choices."""
    if not name:
        return pa.default_memory_pool().backend_name
    if name not in POOLS:
        raise ValueError(f"{setting}={name!r}: choose one of {', '.join(POOLS)} or '' (pyarrow's default)")
    try:
        pool = getattr(pa, f"{name}_memory_pool")()
    except NotImplementedError as exc:  # a build without that allocator
        have = [p for p in POOLS if _has_pool(p)]
        raise ValueError(f"{setting}={name!r}: this pyarrow build has no {name} memory pool; it has: "
                         f"{', '.join(have)}") from exc
    pa.set_memory_pool(pool)
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = name
    return pool.backend_name


def _has_pool(name: str) -> bool:
    try:
        getattr(pa, f"{name}_memory_pool")()
    except NotImplementedError:
        return False
    return True
