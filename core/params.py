"""Parameter fields that describe themselves: `param(default, help=...)` is a dataclass field
whose metadata carries the one-line help. The command line (`flows/options.py`) builds its flags
from these fields, so a flag's help and default are the parameter class's own and cannot drift
from it; the README's tables and error messages can read them too.

    @dataclass(frozen=True)
    class DedupMinhashParams:
        threshold: float = param(0.8, help="Jaccard similarity above which documents are near-duplicates",
                                 metavar="J")
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

HELP = "winnow.help"
METAVAR = "winnow.metavar"
CHOICES = "winnow.choices"
FLAG = "winnow.flag"


def param(default: Any = dataclasses.MISSING, *, help: str,
          default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
          metavar: str | None = None, choices: tuple[str, ...] | None = None,
          flag: str | None = None) -> Any:
    """A dataclass field with its help text (and, for the command line, a metavar, the allowed
    choices, or a flag name other than ``--field-name``)."""
    metadata: dict[str, Any] = {HELP: help}
    if metavar is not None:
        metadata[METAVAR] = metavar
    if choices is not None:
        metadata[CHOICES] = tuple(choices)
    if flag is not None:
        metadata[FLAG] = flag
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def described(cls: type) -> list[dataclasses.Field]:
    """The fields of a parameter dataclass that carry help text, in declaration order."""
    return [f for f in dataclasses.fields(cls) if HELP in f.metadata]


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory), or MISSING."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING
