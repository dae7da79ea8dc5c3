"""The scorer protocol and registry: plain Python over lists of strings, no Spark.

A scorer has a `name`, `score(texts) -> np.ndarray[float32]` (one value per text, higher is
better), `save(path)` and a classmethod `load(path)`; trainable ones add a `train` classmethod.
The heuristics scorer also gives `rule_table(texts) -> dict[rule, np.ndarray[bool]]`, written
beside its score as `rule_<name>` pass/fail columns.

`load_scorer(spec)` checks a spec completely (known kind, model file present and loadable,
labels right) so that a bad model is one clear error before any data is read. Each kind says how
it is built from a spec in `filters/registry.py`, from its own module.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from core.errors import ScorerError

from . import registry



_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


_OPTION = re.compile(r",(?=[a-z][a-z0-9_]*=)")


def _scalar(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer of a `score` stage: its kind, its model file (if any), its options.

    The column it writes is `score_<name>`; `name` defaults to the kind, so two scorers of one
    kind (two DCLM models) need names of their own.
    """

    kind: str
    model: str | None = None
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the name becomes a column (`score_<name>`) and a plot's file name: letters, digits, _
        for what, value in (("name", self.name), ("kind", self.kind)):
            if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
                raise ScorerError(f"scorer {what} {value!r}: use letters, digits and _ only (it names the "
                                  "column score_<name>)")

    @property
    def column(self) -> str:
        return f"score_{self.name or self.kind}"

    @classmethod
    def parse(cls, text: str) -> "ScorerSpec":
        """`KIND`, `KIND=MODEL` or `NAME:KIND=MODEL` (the `--scorer` syntax of `winnow score`),
        then options as `,KEY=VALUE` (``perplexity=en.arpa.bin,sp_model=en.sp.model,unit=ccnet``):
        a comma starts an option only before a lowercase key and `=`, so a comma elsewhere stays
        in the model path. A value that reads as a whole number or a decimal is one."""
        head, _, rest = text.partition("=")
        parts = _OPTION.split(rest)
        model, options = parts[0], {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key in ("kind", "model", "name") or key in options:
                raise ScorerError(f"--scorer {text!r}: option {key!r} given twice or reserved")
            options[key] = _scalar(value.strip())
        name, _, kind = head.rpartition(":")
        if not kind:
            raise ScorerError(f"--scorer {text!r}: expected KIND, KIND=MODEL or NAME:KIND=MODEL[,KEY=VALUE...]")
        return cls(kind=kind.strip(), model=model.strip() or None, name=name.strip() or None, options=options)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], where: str = "scorer") -> "ScorerSpec":
        """A spec from a config table: `{kind = "dclm", model = "...", name = "...", <options>}`."""
        if not isinstance(raw, dict) or "kind" not in raw:
            raise ScorerError(f"{where}: a scorer is a table with at least `kind` (one of {', '.join(registry.kinds())})")
        rest = dict(raw)
        kind, model, name = rest.pop("kind"), rest.pop("model", None), rest.pop("name", None)
        return cls(kind=kind, model=model, name=name, options=rest)


def fasttext_quiet():
    """The fasttext module with its load-time warning on stderr silenced (it is noise)."""
    import fasttext
    import fasttext.FastText as ft

    ft.eprint = lambda *args, **kwargs: None
    return fasttext


def load_fasttext(path: str | Path, what: str):
    """A fastText model from `path`, or a one-line ScorerError saying what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise ScorerError(f"{what}: model file not found: {p}")
    try:
        return fasttext_quiet().load_model(str(p))
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise ScorerError(f"{what}: {p} is not a fastText model ({exc})") from None


class FastTextClassifier:
    """What the fastText binary classifiers (dclm, preselect) share: the label check, load, save
    and training from texts in memory. A subclass sets `name`, `positive`, `negative`, a static
    `to_line`, `params_class` (its training settings) and a classmethod `train_file(path, params)`."""

    name = ""
    positive = ""
    negative = ""
    params_class: type = type(None)

    def __init__(self, model, path: str | None = None):
        labels = sorted(model.get_labels())
        expected = sorted([self.positive, self.negative])
        if labels != expected:
            where = f" {path}" if path else ""
            raise ScorerError(f"{self.name}: model{where} was trained with labels {labels}, expected "
                              f"{expected[0]} and {expected[1]} (train one with `winnow train-scorer {self.name}`)")
        self.model, self.path = model, path

    @classmethod
    def load(cls, path: str | Path):
        return cls(load_fasttext(path, cls.name), str(path))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.model.save_model(str(path))

    @classmethod
    def train(cls, positives, negatives, params=None):
        """Train from texts in memory (small sets and tests; `winnow train-scorer` streams from
        Spark): labelled lines, shuffled with the params' seed (SGD must not see all of one label
        first), through a temporary file to `train_file`."""
        import os
        import random
        import tempfile

        params = params if params is not None else cls.params_class()
        rows = [(cls.positive, t) for t in positives] + [(cls.negative, t) for t in negatives]
        random.Random(params.seed).shuffle(rows)
        fd, tmp = tempfile.mkstemp(suffix=".txt", prefix=f"{cls.name}-train-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for label, text in rows:
                    line = cls.to_line(text)
                    if line.strip():
                        out.write(f"{label} {line}\n")
            return cls.train_file(tmp, params)
        finally:
            os.unlink(tmp)


def read_json_config(path: str | Path, kind: str) -> dict[str, Any]:
    """A scorer's JSON config file, checked to be of `kind`."""
    p = Path(path)
    if not p.is_file():
        raise ScorerError(f"{kind}: config file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScorerError(f"{kind}: {p} is not a JSON scorer config ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ScorerError(f"{kind}: {p} is a scorer config of kind {found!r}, not {kind!r}")
    return data


def load_scorer(spec: ScorerSpec) -> Scorer:
    """The scorer a spec names, fully checked (by its kind's `build` in the registry)."""
    return registry.get(spec.kind).build(spec)


def no_options(spec: ScorerSpec, allowed: tuple[str, ...] = ()) -> None:
    """A one-line ScorerError when a spec carries options its kind does not take."""
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        known = f"known: {', '.join(allowed)}" if allowed else f"a {spec.kind} scorer takes only `model`"
        raise ScorerError(f"{spec.kind}: unknown options {', '.join(unknown)} ({known})")
