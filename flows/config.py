"""Flow configs: TOML files, validated, with one-line errors that name the offending key.

Relative paths in a config file resolve against the directory of that file; paths given on the
command line resolve against the current directory.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from core.errors import ConfigError, ScorerError, WinnowError
from pipelines import STAGES
from pipelines.read import InputSpec
from pipelines.read_kernel import FORMATS
from pipelines.write import WriteParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputConfig(_Strict):
    path: str
    source: str
    domain: str = "default"
    format: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = ""


class SparkConfig(_Strict):
    master: str = "local[*]"
    shuffle_partitions: int = Field(default=8, ge=1)
    driver_memory: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class WriteConfig(_Strict):
    compression: str = "zstd"
    max_records_per_file: int = Field(default=100_000, ge=0)
    columns: list[str] = Field(default_factory=list)


class ScorerTrainConfig(_Strict):
    """A model the flow trains before it reads its inputs ([[train]]), in the order given, so a
    later entry can use an earlier one's output:

    - any scorer kind with a trainer in filters/registry.py (dclm, preselect, dfn), from
      `positives` and `negatives`;
    - ``kind = "preselect"`` from reference LMs instead: `models` (or `train_models` trained on
      `lm_data`) and `seed_docs` (flows/preselect.py); its `params` mix the family's settings
      (`flows.preselect.FAMILY_FIELDS`: lm_tokens, lm_growth, lm_size, ability_data, stride) with
      fastText's (`filters.preselect.PreselectTrainParams`);
    - ``kind = "lm"``: a reference LM (`winnow train-lm`) from `inputs`; `params` are
      `flows.train_lm.LmSpec`'s fields (size, tokens, vocab_size, seq_len, fold, ...).
    """

    kind: str = "dclm"
    output: str                          # the model file (lm: directory); "{output}" is the run's output directory
    positives: list[str] = Field(default_factory=list)
    negatives: list[str] | str = "inputs"  # "inputs": the flow's own inputs (the raw pool)
    inputs: list[str] | str = "inputs"   # lm: its training text ("inputs": the flow's inputs)
    models: list[str] = Field(default_factory=list)      # preselect: reference LM directories
    seed_docs: list[str] | str = Field(default_factory=list)  # preselect: "inputs" or paths
    lm_data: list[str] | str = Field(default_factory=list)    # preselect with train_models
    train_models: int = Field(default=0, ge=0)
    abilities: list[float] = Field(default_factory=list)
    max_per_class: int = Field(default=200_000, ge=2)
    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int | None = None              # default: the run's seed
    params: dict[str, Any] = Field(default_factory=dict)  # the kind's training parameters (dclm: DclmTrainParams)

    def from_models(self) -> bool:
        """A preselect entry labelled by reference LMs (not by positives and negatives)."""
        return self.kind == "preselect" and not self.positives


class VariantConfig(_Strict):
    """One mix to train on ([[validate.variants]]): stages applied to the shared base."""

    name: str = Field(min_length=1)                 # its directories: mixers.dirnames.dir_name(name)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    layout: str = Field(default="decomposition", pattern=r"^(decomposition|concat)$")
    seq_len: int = Field(default=256, ge=2)          # concat layout: window length
    schedule: dict[str, Any] | None = None           # a mixture schedule (mixers.schedule JSON)


class ValidateConfig(_Strict):
    """[validate]: train one small model per variant and seed, at an equal token budget, and
    compare held-out loss and bits per byte (flows/validate.py)."""

    after: str | None = None             # label of the stage the variants start from (default: see flows/validate.py)
    variants: list[VariantConfig] = Field(min_length=1)
    heldout: list[InputConfig] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    tokens: int = Field(default=500_000, ge=1)        # training tokens per run, the same for every variant
    tokens_per_batch: int = Field(default=2048, ge=1)
    buckets: str = "5..8"                # dataset decomposition buckets, LO..HI
    tokenizer: str | None = None         # a tokenizer.json shared by every variant; default: trained on the base
    vocab_size: int = Field(default=4096, ge=257)
    eval_max_tokens: int | None = Field(default=50_000, ge=1)   # per held-out domain
    model: dict[str, Any] = Field(default_factory=lambda: {"size": "tiny"})
    train: dict[str, Any] = Field(default_factory=dict)           # more training.loop.TrainConfig fields
    parallel: int = Field(default=1, ge=1)   # seeds of a variant trained at once, each in its own process


class ScheduleConfig(_Strict):
    """When `winnow serve` runs the config: a cron expression or an interval in seconds, in a
    time zone (IANA name, default UTC)."""

    cron: str | None = None
    interval: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_schedule(self) -> "ScheduleConfig":
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron and interval")
        if self.cron is not None:
            from prefect.schedules import validate_cron_string

            try:
                validate_cron_string(self.cron)
            except ValueError:
                raise ValueError(f"{self.cron!r} is not a cron expression (minute hour day month weekday)") from None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{self.timezone!r} is not a time zone name (such as UTC or Europe/Paris)") from None
        return self


class RunConfig(_Strict):
    output: str  # may hold {date}: the scheduled date (a served run) or today's (UTC), as YYYY-MM-DD
    seed: int = 0
    overwrite: bool = False
    # auto: the local engine for a dedup on one machine (pipelines/local_engine.py), else Spark
    engine: Literal["auto", "spark", "local"] = "auto"
    inputs: list[InputConfig] = Field(min_length=1)
    train: list[ScorerTrainConfig] = Field(default_factory=list)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    validate_: ValidateConfig | None = Field(default=None, alias="validate")
    schedule: ScheduleConfig | None = None


def dated(cfg: RunConfig, when) -> RunConfig:
    """`cfg` with `{date}` in its output replaced by `when`'s date (YYYY-MM-DD)."""
    if "{date}" not in cfg.output:
        return cfg
    return cfg.model_copy(update={"output": cfg.output.replace("{date}", when.strftime("%Y-%m-%d"))})


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
        if isinstance(value, list):  # TOML has arrays, the parameter dataclasses have tuples
            value = tuple(value)
        try:
            checked[key] = TypeAdapter(fields[key].type).validate_python(value, strict=True)
        except ValidationError as exc:
            raise ConfigError(f"'{where}.{key}': {exc.errors()[0]['msg']}") from None
    try:
        return spec.params(**checked)
    except WinnowError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
    stages = [_resolve_stage_paths(raw, base_dir) for raw in cfg.stages]
    train = []
    for item in cfg.train:
        update: dict[str, Any] = {"output": _resolve_model(item.output, base_dir),
                                  "positives": [_resolve(p, base_dir) for p in item.positives],
                                  "models": [_resolve_model(m, base_dir) for m in item.models]}
        for name in ("negatives", "inputs", "seed_docs", "lm_data"):
            value = getattr(item, name)
            if isinstance(value, str) and value != "inputs":
                raise ConfigError(f"{origin}: 'train.{name}': a list of paths, or \"inputs\" for the flow's inputs")
            update[name] = value if isinstance(value, str) else [_resolve(v, base_dir) for v in value]
        # paths among the params: an LM's own tokenizer, PreSelect's ability split
        update["params"] = {k: _resolve(v, base_dir) if k in ("tokenizer", "ability_data") and isinstance(v, str)
                            else v for k, v in item.params.items()}
        train.append(item.model_copy(update=update))
    try:
        plans(cfg)
        train_specs(cfg)
        write_params(cfg, "")
    except WinnowError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    validate = cfg.validate_
    if validate is not None:
        validate = validate.model_copy(update={
            "heldout": [h.model_copy(update={"path": _resolve(h.path, base_dir)}) for h in validate.heldout],
            "tokenizer": _resolve(validate.tokenizer, base_dir) if validate.tokenizer else None,
            "variants": [v.model_copy(update={"stages": [_resolve_stage_paths(raw, base_dir) for raw in v.stages]})
                         for v in validate.variants]})
        try:
            check_validate(cfg.model_copy(update={"validate_": validate}))
        except WinnowError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    return cfg.model_copy(update={"inputs": inputs, "stages": stages, "train": train,
                                  "output": _resolve(cfg.output, base_dir), "validate_": validate})


def _resolve_model(path: str, base: Path) -> str:
    return path if path.startswith("{output}") else _resolve(path, base)


def _resolve_stage_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Model paths of a score stage's scorers, and a dedup stage's `against` directories,
    resolve like every other path in the file."""
    against = raw.get("against")
    if isinstance(against, list) and all(isinstance(a, str) for a in against):
        raw = {**raw, "against": [_resolve(a, base) for a in against]}
    if raw.get("stage") == "rephrase":  # a local model directory, the tokenizer, the answer cache
        paths = ("tokenizer", "cache") + (("model",) if raw.get("backend") == "transformers" else ())
        return {**raw, **{k: _resolve(raw[k], base) for k in paths if isinstance(raw.get(k), str)}}
    if raw.get("stage") != "score" or not isinstance(raw.get("scorers"), list):
        return raw
    scorers = []
    for s in raw["scorers"]:
        model = s.get("model") if isinstance(s, dict) else None
        if isinstance(model, str) and (s.get("kind") != "langid" or model.endswith(".json")):
            s = {**s, "model": _resolve_model(model, base)}
        sp_model = s.get("sp_model") if isinstance(s, dict) else None   # perplexity: KenLM's SentencePiece
        if isinstance(sp_model, str):
            s = {**s, "sp_model": _resolve_model(sp_model, base)}
        folds = s.get("folds") if isinstance(s, dict) else None   # perplexity: two reference LMs
        if isinstance(folds, list) and all(isinstance(f, str) for f in folds):
            s = {**s, "folds": [_resolve_model(f, base) for f in folds]}
        scorers.append(s)
    return {**raw, "scorers": scorers}


def train_specs(cfg: RunConfig) -> list:
    """The [[train]] entries as `flows.train.TrainSpec`s, with `{output}` and "inputs" filled in."""
    from filters import registry

    from .train import TrainSpec

    out = []
    flow_inputs = [i.path for i in cfg.inputs]

    def paths(value) -> tuple[str, ...]:
        return tuple(flow_inputs if value == "inputs" else [v.replace("{output}", cfg.output) for v in value])

    for i, t in enumerate(cfg.train):
        seed = cfg.seed if t.seed is None else t.seed
        output = t.output.replace("{output}", cfg.output)
        try:
            if t.kind == "lm":
                from .train_lm import LmSpec

                out.append(LmSpec(inputs=paths(t.inputs), output=output, **{"seed": seed, **t.params}))
                continue
            if t.from_models():
                from .preselect import FAMILY_FIELDS, PreselectSpec

                # params: the family's settings (lm_tokens, lm_growth, ...) and fastText's
                family = {k: v for k, v in t.params.items() if k in FAMILY_FIELDS}
                params = registry.trainer(t.kind).params(**{k: v for k, v in t.params.items()
                                                            if k not in FAMILY_FIELDS})
                out.append(PreselectSpec(output=output, seed_docs=paths(t.seed_docs), models=paths(t.models),
                                         abilities=tuple(t.abilities), train_models=t.train_models,
                                         lm_data=paths(t.lm_data), heldout_fraction=t.heldout_fraction,
                                         max_docs=t.max_per_class, seed=seed, params=params, **family))
                continue
            params = registry.trainer(t.kind).params(**t.params)
        except (TypeError, ScorerError, ConfigError) as exc:
            raise ConfigError(f"'train[{i}]': {exc}") from None
        if not t.positives:
            raise ConfigError(f"'train[{i}]': a {t.kind} entry needs positives")
        negatives = [i.path for i in cfg.inputs] if t.negatives == "inputs" else t.negatives
        out.append(TrainSpec(kind=t.kind, output=t.output.replace("{output}", cfg.output),
                             positives=tuple(t.positives), negatives=tuple(negatives),
                             max_per_class=t.max_per_class, heldout_fraction=t.heldout_fraction,
                             seed=cfg.seed if t.seed is None else t.seed, params=params))
    return out


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


def parse_buckets(text: str, where: str) -> tuple[int, int]:
    """``LO..HI`` (dataset decomposition buckets, e.g. ``8..13``) as two ints; `where` names the
    option or key in the one-line error."""
    lo, sep, hi = text.partition("..")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
        raise ConfigError(f"{where} {text!r}: expected LO..HI, e.g. 8..13")
    return int(lo), int(hi)


def input_specs(cfg: RunConfig) -> tuple[InputSpec, ...]:
    return tuple(InputSpec(**i.model_dump()) for i in cfg.inputs)


def write_params(cfg: RunConfig, output: str) -> WriteParams:
    values = cfg.write.model_dump()
    values["columns"] = tuple(values["columns"])
    return WriteParams(path=str(Path(output) / "kept") if output else "", **values)


def with_overrides(
    cfg: RunConfig,
    *,
    inputs: list[str] | None = None,
    domain: str | None = None,
    domain_field: str | None = None,
    output: str | None = None,
    master: str | None = None,
    overwrite: bool | None = None,
    engine: str | None = None,
) -> RunConfig:
    """Command-line overrides: `--input` replaces the config's inputs (source = file stem)."""
    update: dict[str, Any] = {}
    if inputs:
        specs = []
        for path in inputs:
            p = Path(path).expanduser().resolve()
            stem = p.name.split(".")[0] or p.name
            specs.append(InputConfig(path=str(p), source=stem, domain=domain or "default",
                                     domain_field=domain_field or ""))
        update["inputs"] = specs
    elif domain is not None:
        update["inputs"] = [i.model_copy(update={"domain": domain}) for i in cfg.inputs]
    if output:
        update["output"] = str(Path(output).expanduser().resolve())
    if master:
        update["spark"] = cfg.spark.model_copy(update={"master": master})
    if overwrite is not None:  # the command line wins over the config, both ways
        update["overwrite"] = overwrite
    if engine is not None:
        from pipelines.local_engine import ENGINES

        if engine not in ENGINES:
            raise ConfigError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
        update["engine"] = engine
    return cfg.model_copy(update=update)


def config_for_inputs(inputs: list[str], output: str, domain: str | None = None,
                      domain_field: str | None = None) -> RunConfig:
    """A config with no file: the given inputs, no middle stages (for `winnow run --input` without CONFIG)."""
    base = RunConfig.model_validate({"output": output, "inputs": [{"path": "-", "source": "-"}]})
    return with_overrides(base, inputs=inputs, domain=domain, domain_field=domain_field, output=output)


# --------------------------------------------------------------------------------------------
# The [validate] table (run by flows/validate.py)

_BEFORE = ("select", "tokenize", "decompose", "export")


def base_stage(cfg: RunConfig) -> str | None:
    """The label of the stage the variants start from (None: the read documents)."""
    labels = [(p.name, p.label) for p in plans(cfg)]
    v = cfg.validate_
    if v is not None and v.after is not None:
        known = [label for _, label in labels] + ["read"]
        if v.after not in known:
            raise WinnowError(f"validate.after: no stage labelled {v.after!r} (stages: {', '.join(known)})")
        return None if v.after == "read" else v.after
    base = None
    for name, label in labels:
        if name in _BEFORE:
            break
        base = label
    return base


def check_validate(cfg: RunConfig) -> None:
    """Errors a [validate] table can have, found before anything runs."""
    from training.loop import TrainConfig
    from training.model import model_config

    v = cfg.validate_
    assert v is not None
    parse_buckets(v.buckets, "validate.buckets")
    base_stage(cfg)
    names = [x.name for x in v.variants]
    if len(set(names)) != len(names):
        raise WinnowError(f"validate.variants: names must be unique, got {names}")
    for i, variant in enumerate(v.variants):
        parse_config({"output": "/", "inputs": [{"path": "/", "source": "x"}],
                      "stages": variant.stages + variant_tail_stages(variant, v, "/t.json")}, Path("/"),
                     f"validate.variants[{i}]")
        if variant.schedule is not None:
            from mixers.schedule import Schedule

            try:
                Schedule.from_json(variant.schedule)
            except (ValueError, TypeError) as exc:
                raise WinnowError(f"validate.variants[{i}].schedule: {exc}") from None
    try:
        model_config(1000, **v.model)
        TrainConfig(data="", output="", tokens=v.tokens, tokens_per_batch=v.tokens_per_batch, **v.train)
    except (ValueError, TypeError) as exc:
        raise WinnowError(f"validate: {exc}") from None


def variant_tail_stages(variant: VariantConfig, v: ValidateConfig, tokenizer: str) -> list[dict[str, Any]]:
    lo, hi = parse_buckets(v.buckets, "validate.buckets")
    stages: list[dict[str, Any]] = [{"stage": "tokenize", "tokenizer": tokenizer}]
    if variant.layout == "decomposition":
        # remainders below the smallest bucket are not trained on: dropped and counted in the manifest
        stages.append({"stage": "decompose", "min_log2": lo, "max_log2": hi, "tail": "drop"})
        stages.append({"stage": "export", "by_domain": variant.schedule is not None})
    else:
        stages.append({"stage": "export", "layout": "concat", "seq_len": variant.seq_len})
    return stages
