"""Flow configs: TOML files, validated, with one-line errors that name the offending key.

Relative paths in a config file resolve against the directory of that file; paths given on the
command line resolve against the current directory.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipelines import STAGES
from pipelines.read import InputSpec
from pipelines.read_kernel import FORMATS
from pipelines.stage import WinnowError
from pipelines.write import WriteParams


class ConfigError(WinnowError):
    """A config that cannot run: the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputConfig(_Strict):
    path: str
    source: str
    domain: str = "default"
    format: str | None = None
    text_field: str = "text"
    id_field: str = "id"


class SparkConfig(_Strict):
    master: str = "local[*]"
    shuffle_partitions: int = Field(default=8, ge=1)
    driver_memory: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class WriteConfig(_Strict):
    compression: str = "zstd"
    max_records_per_file: int = Field(default=100_000, ge=0)


class RunConfig(_Strict):
    output: str
    seed: int = 0
    overwrite: bool = False
    inputs: list[InputConfig] = Field(min_length=1)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """A configured stage: its registry name, where its removed rows go, its parameters."""

    name: str
    label: str
    params: Any


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    where = _loc(tuple(err["loc"]))
    where = f"{prefix}.{where}" if prefix and where else (prefix or where)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{where}'"
    if kind == "missing":
        return f"missing key '{where}'"
    return f"'{where}': {err['msg']}"


def stage_params(kind: str, values: dict[str, Any], where: str) -> Any:
    """Validate `values` against the parameter dataclass of stage `kind`."""
    spec = STAGES[kind]
    fields = {f.name: f for f in dataclasses.fields(spec.params)}
    for key in values:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"unknown key '{where}.{key}' for stage {kind} (known: {known})")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = TypeAdapter(fields[key].type).validate_python(value, strict=True)
        except ValidationError as exc:
            raise ConfigError(f"'{where}.{key}': {exc.errors()[0]['msg']}") from None
    return spec.params(**checked)


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def parse_config(data: dict[str, Any], base_dir: Path, origin: str = "config") -> RunConfig:
    """Validate a config mapping; relative paths resolve against `base_dir`."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_first_error(exc)}") from None
    inputs = []
    for i, item in enumerate(cfg.inputs):
        if item.format is not None and item.format not in FORMATS:
            raise ConfigError(f"{origin}: 'inputs[{i}].format': {item.format!r} is not one of {', '.join(FORMATS)}")
        inputs.append(item.model_copy(update={"path": _resolve(item.path, base_dir)}))
    try:
        plans(cfg)
        write_params(cfg, "")
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except WinnowError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return cfg.model_copy(update={"inputs": inputs, "output": _resolve(cfg.output, base_dir)})


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse_config(data, p.resolve().parent, str(p))


def plans(cfg: RunConfig) -> list[StagePlan]:
    """The configured [[stages]], validated; labels are unique (a repeated stage gets -2, -3, ...)."""
    out: list[StagePlan] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(cfg.stages):
        where = f"stages[{i}]"
        kind = raw.get("stage")
        if kind is None:
            raise ConfigError(f"missing key '{where}.stage'")
        if not isinstance(kind, str) or kind not in STAGES:
            known = ", ".join(sorted(STAGES))
            raise ConfigError(f"'{where}.stage': unknown stage {kind!r} (known: {known})")
        params = stage_params(kind, {k: v for k, v in raw.items() if k != "stage"}, where)
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
        out.append(StagePlan(kind, label, params))
    return out


def input_specs(cfg: RunConfig) -> tuple[InputSpec, ...]:
    return tuple(InputSpec(**i.model_dump()) for i in cfg.inputs)


def write_params(cfg: RunConfig, output: str) -> WriteParams:
    return WriteParams(path=str(Path(output) / "kept") if output else "", **cfg.write.model_dump())


def with_overrides(
    cfg: RunConfig,
    *,
    inputs: list[str] | None = None,
    domain: str | None = None,
    output: str | None = None,
    master: str | None = None,
    overwrite: bool | None = None,
) -> RunConfig:
    """Command-line overrides: `--input` replaces the config's inputs (source = file stem)."""
    update: dict[str, Any] = {}
    if inputs:
        specs = []
        for path in inputs:
            p = Path(path).expanduser().resolve()
            stem = p.name.split(".")[0] or p.name
            specs.append(InputConfig(path=str(p), source=stem, domain=domain or "default"))
        update["inputs"] = specs
    elif domain is not None:
        update["inputs"] = [i.model_copy(update={"domain": domain}) for i in cfg.inputs]
    if output:
        update["output"] = str(Path(output).expanduser().resolve())
    if master:
        update["spark"] = cfg.spark.model_copy(update={"master": master})
    if overwrite is not None:
        update["overwrite"] = overwrite or cfg.overwrite
    return cfg.model_copy(update=update)


def config_for_inputs(inputs: list[str], output: str, domain: str | None = None) -> RunConfig:
    """A config with no file: the given inputs, no middle stages (for `winnow run --input` without CONFIG)."""
    base = RunConfig.model_validate({"output": output, "inputs": [{"path": "-", "source": "-"}]})
    return with_overrides(base, inputs=inputs, domain=domain, output=output)
