"""Checks and conversions of plain values that several packages share, so each exists once.

Standard library only (`core` imports nothing else): numpy scalars and arrays are recognised by
duck typing. numpy registers its integer types as `numbers.Integral` and its floats as
`numbers.Real`, and every numpy scalar or array has ``.tolist()``.

- `check_int(name, value, minimum=None, *, whole_floats=False)`: an integer argument (Python or
  numpy; never a bool), optionally at least ``minimum``; with ``whole_floats`` an integral float
  such as ``1e9`` (a token budget written in a config) counts too. A bad value is a ValueError
  whose one-line message names the argument, as every value check in `mixers` and `training`
  raises (their callers and tests catch ValueError).
- `jsonable(value)`: ``value`` as plain JSON data (dicts with string keys, lists, str, int,
  float, bool, None), for ``train.json`` and for comparing a saved sampler state with the
  current settings. Tuples become lists, numpy values Python ones, mapping keys strings (as
  `json.dumps` writes them), and anything else its ``str``. A float that is not finite becomes
  the string ``"inf"``, ``"-inf"`` or ``"nan"`` (Python's spelling, which ``float()`` reads
  back): JSON has no such numbers (``json.dumps`` would write ``Infinity``, which strict parsers
  refuse), and null cannot stand in for them, because null already means something else where
  they occur (``max_repeats``: null is "the export's cap", ``inf`` is "no cap").
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

__all__ = ["check_int", "jsonable"]


def check_int(name: str, value: object, minimum: int | None = None, *, whole_floats: bool = False) -> int:
    """``value`` as an int; a ValueError naming ``name`` when it is not an integer (a bool is
    not), or is below ``minimum``. ``whole_floats``: accept a finite float with no fraction."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        number = int(value)
    elif (whole_floats and isinstance(value, Real) and not isinstance(value, bool)
          and math.isfinite(float(value)) and float(value).is_integer()):
        number = int(float(value))
    else:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def _key(key: Any) -> str:
    """A mapping key as `json.dumps` writes it."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    item = jsonable(key)
    return item if isinstance(item, str) else str(item)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; see the module docstring for each conversion."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, float):  # numpy's float64 too (a float subclass)
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars (float32, bool_) and arrays
        return jsonable(value.tolist())
    if isinstance(value, Real):
        return jsonable(float(value))
    return str(value)
