"""Command-line flags built from parameter classes: a field declared with `core.params.param` is
a flag, with the field's help, type, choices and default. So `winnow dedup --threshold`'s help is
`DedupMinhashParams.threshold`'s and cannot disagree with it, and a new stage parameter is a new
flag of every verb that runs the stage without any parser code.

- ``--field-name`` unless the field names its own flag; a bool is ``--flag`` / ``--no-flag``.
- The flag's default is None ("not given"): the parameter class's default applies, and a config
  value is not overridden by a flag nobody typed. The help says the class default.
- A field whose metavar is PATH, FILE or DIR is a path: it is resolved against the current
  directory, as every path on the command line is.
- A list of strings is a repeated flag when it is a list of paths or names its own flag
  (`--style qa --style medium`). Fields of types a flag cannot hold (tables, lists of tables, other
  lists) are left to configs.
- One flag may feed the same-named field of several classes (`winnow export --seed` seeds the
  tokenizer sample and the random splits).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.params import CHOICES, FLAG, HELP, METAVAR, default_of, described, param

PATH_METAVARS = ("PATH", "FILE", "DIR")
_SCALARS = (bool, int, float, str)


def _scalar_type(annotation: Any) -> type | None:
    """int for `int` and `int | None`; None for types a flag cannot hold."""
    if annotation in _SCALARS:
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS:
            return args[0]
    return None


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get(FLAG) or "--" + f.name.replace("_", "-")


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:_}"
    return str(value)


def add_params(parser: argparse.ArgumentParser, cls: type, *, only: tuple[str, ...] | None = None,
               skip: tuple[str, ...] = ()) -> None:
    """Add a flag for each described scalar field of `cls` (those in `only`, if given; not those
    in `skip`). A flag already on the parser (from another class) is shared."""
    hints = typing.get_type_hints(cls)
    taken = {a.dest: a for a in parser._actions}
    for f in described(cls):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        kind = _scalar_type(hints[f.name])
        # a list of paths, or a list a field gives its own flag name for (rephrase's --style)
        paths = hints[f.name] == tuple[str, ...] and (f.metadata.get(METAVAR) in PATH_METAVARS or FLAG in f.metadata)
        if kind is None and not paths:
            continue
        help_text = f"{f.metadata[HELP]} (default {_shown(default_of(f))})"
        if f.name in taken:  # one flag, two classes' fields: its help says both
            taken[f.name].help = f"{taken[f.name].help}; and {help_text}"
            continue
        common: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if paths:  # a list: the flag repeats (--against A --against B, --style qa --style medium)
            parser.add_argument(flag_name(f), action="append", metavar=f.metadata[METAVAR], **common)
        elif kind is bool:
            parser.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **common)
        else:
            parser.add_argument(flag_name(f), type=kind, metavar=f.metadata.get(METAVAR, f.name.upper()),
                                choices=f.metadata.get(CHOICES), **common)
        taken[f.name] = parser._actions[-1]


def given(args: argparse.Namespace, cls: type, *, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of `cls` whose flags were given, paths resolved."""
    out: dict[str, Any] = {}
    for f in described(cls):
        if only is not None and f.name not in only:
            continue
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, str) and f.metadata.get(METAVAR) in PATH_METAVARS:
            value = str(Path(value).expanduser().resolve())
        elif isinstance(value, list) and f.metadata.get(METAVAR) in PATH_METAVARS:
            value = [str(Path(v).expanduser().resolve()) for v in value]
        out[f.name] = value
    return out


@dataclass(frozen=True)
class RunOptions:
    """The options every command that runs a flow shares, declared once."""

    output: str | None = param(None, metavar="DIR", help="output directory (for a config: default its `output`)")
    domain: str | None = param(None, metavar="NAME",
                               help="domain of the inputs (default: 'default', or each config input's own)")
    domain_field: str | None = param(None, metavar="FIELD",
                                     help="records' own domain: a string field of each record (e.g. domain), "
                                     "else --domain")
    master: str | None = param(None, metavar="URL",
                               help="Spark master: local[*] (the default), spark://host:7077, yarn, k8s://..., "
                               "or a Spark Connect address sc://host:15002")
    engine: str | None = param(None, metavar="ENGINE",
                               help="auto (the default: a dedup of up to 1 GiB of text on one machine runs on the "
                               "local engine, a process pool without Spark; anything else on Spark), spark or local")
    overwrite: bool | None = param(None, help="start fresh: discard the saved state of an earlier Winnow run in "
                                   "the output directory and delete only the entries its .winnow-owned.json lists "
                                   "(without it a run resumes the earlier one; a directory without that record is "
                                   "never written into); --no-overwrite overrides overwrite = true in a config")


def add_run_options(parser: argparse.ArgumentParser, *, only: tuple[str, ...] | None = None) -> None:
    """RunOptions' flags (and ``-o`` for --output), then ``--verbose``."""
    for f in described(RunOptions):
        if only is not None and f.name not in only:
            continue
        names = [flag_name(f)] + (["-o"] if f.name == "output" else [])
        if f.name == "overwrite":
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f.metadata[HELP])
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=f.metadata[METAVAR],
                                help=f.metadata[HELP])
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")
