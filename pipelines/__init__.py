"""Spark stages: DataFrame in, DataFrame out. The only package that imports pyspark.

Importing the package imports no stage: a Python worker that unpickles one kernel (say
`pipelines.read_kernel`) imports that module and what it needs, not every stage and its
libraries (about half a second per worker). The stage registry (`STAGES`, `READ_COLUMNS`,
`check_columns`, in `registry.py`) loads on first use.
"""
from __future__ import annotations

from typing import Any

_REGISTRY = ("STAGES", "READ_COLUMNS", "StageSpec", "Columns", "check_columns")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


__all__ = list(_REGISTRY)
