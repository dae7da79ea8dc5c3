"""`winnow`: the command line over the flows.

Every error a user can cause is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import UsageError

EPILOG = "Docs: README.md in the Winnow repository. Exit status: 0 done, 2 user error, 1 failure."


def _quiet_environment(verbose: bool) -> None:
    """Settings that must exist before Prefect or Spark are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipelines.spark import configure_environment

    configure_environment()


INPUTS_HELP = "input files, directories, globs or saved `datasets` directories"
# `winnow export`'s stages and which of their parameters are its flags.
EXPORT_FLAGS = (("tokenize", ("tokenizer", "vocab_size", "seed")), ("decompose", ("tail", "seed")),
                ("export", ("layout", "seq_len", "mixture", "by_domain", "shard_rows")))


def worker_error(exc: BaseException) -> str | None:
    """The message of a Winnow error raised inside a Spark task, which reaches the driver as a
    Python traceback in a Spark exception's text ("core.errors.BackendError: ..."), or None."""
    import re

    from core import errors

    names = "|".join(n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.WinnowError))
    seen = exc
    while seen is not None:
        found = re.findall(rf"(?:core\.errors\.)?\b({names}): ([^\n]+)", str(seen))
        if found and type(seen).__name__ != found[-1][0]:
            return found[-1][1].strip()
        seen = seen.__cause__ or seen.__context__
    return None


def _verb(sub, name: str, help: str, description: str, handler) -> argparse.ArgumentParser:
    """A sub-command; `handler(args) -> exit status` runs it."""
    verb = sub.add_parser(name, help=help, description=description, epilog=EPILOG)
    verb.set_defaults(handler=handler)
    return verb


def build_parser() -> argparse.ArgumentParser:
    """The verbs; each stage's flags come from its parameter class (flows/options.py)."""
    from filters import registry
    from pipelines import STAGES

    from .options import add_params, add_run_options
    from .train import TrainSpec

    parser = argparse.ArgumentParser(
        prog="winnow", epilog=EPILOG,
        description="Winnow curates pretraining data: read corpora, deduplicate, score and select, "
        "and write Parquet shards with a manifest and a per-stage report.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _verb(sub, "run", "run a curation flow from a TOML config",
                "Run a curation flow: read the inputs, run the configured stages in order, write "
                "<output>/kept/ (Parquet), <output>/removed/<stage>/, manifest.json and report.md. "
                "Spark runs embedded (local[*]) unless a master URL is given; Prefect runs in ephemeral "
                "mode unless PREFECT_API_URL points at a server.", handler=cmd_run)
    run.add_argument("config", nargs="?", metavar="CONFIG",
                     help="flow config (TOML). Optional when --input and --output are given: then the "
                     "flow is read -> write.")
    run.add_argument("--input", "-i", action="append", metavar="PATH", default=None,
                     help="an input file, directory, glob or saved `datasets` directory; repeatable. "
                     "Replaces the config's inputs; source = the file's stem.")
    add_run_options(run)

    dedup = _verb(sub, "dedup", "remove near-duplicates (MinHash-LSH) from input files",
                  "Run read -> dedup_minhash -> write on the inputs: the same stage and output layout as "
                  "`winnow run` with a [[stages]] entry `stage = \"dedup_minhash\"`. Removed rows go to "
                  "<output>/removed/dedup_minhash/ with reason 'near-duplicate of <id>'.", handler=cmd_dedup)
    dedup.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUTS_HELP)
    add_params(dedup, STAGES["dedup_minhash"].params)
    dedup.add_argument("--explain", action="store_true",
                       help="print the chosen bands x rows and collision probabilities, then exit")
    add_run_options(dedup)

    kinds = "; ".join(f"{k}: {registry.get(k).summary}" for k in registry.kinds())
    score = _verb(sub, "score", f"score documents with quality scorers ({', '.join(registry.kinds())})",
                  "Run read -> score [-> select] -> write on the inputs. <output>/kept/ gets one Parquet row "
                  "per document: id, source, domain and a score_<name> column per scorer (the heuristics "
                  "scorer adds rule_<rule> pass/fail columns), plus text with --with-text. The report has a "
                  f"quantile table and a histogram per score (<output>/plots/). Scorers: {kinds}.",
                  handler=cmd_score)
    score.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUTS_HELP)
    score.add_argument("--scorer", "-s", action="append", default=None, metavar="SPEC",
                       help="KIND, KIND=MODEL or NAME:KIND=MODEL, then ,KEY=VALUE options; repeatable. "
                       "dclm=PATH (a model from `winnow train-scorer dclm`), heuristics[=CONFIG.json], "
                       "langid[=LANG] (default en), perplexity=LM_DIR or perplexity=KENLM,sp_model=SP,unit=ccnet")
    score.add_argument("--with-text", action="store_true", help="write the text beside the scores")
    add_params(score, STAGES["select"].params, only=("top_fraction",))
    score.add_argument("--select-score", metavar="COL", default=None,
                       help="with --top-fraction: the score column to select on (default: the first "
                       "scorer's); kept/ gets a boolean `selected` column and <output>/selected/ the rows")
    add_run_options(score)

    rephrase = _verb(sub, "rephrase", "rewrite documents with an LLM in WRAP's styles (synthetic data)",
                     "Run read -> rephrase -> write: each document is cut into chunks of about 300 tokens at "
                     "sentence boundaries, each chunk rewritten in each --style (easy, medium, hard, qa: WRAP's "
                     "prompts) by an OpenAI-compatible server (--backend openai --base-url URL --model NAME: "
                     "vLLM, llama.cpp, SGLang, TGI) or a local transformers model (--backend transformers --model "
                     "DIR). <output>/kept/ holds one synthetic document per document and style (source "
                     "wrap:<style>, meta.parent_id); <output>/removed/rephrase/ the pairs that could not be "
                     "rephrased, with the reason. Answers are cached (<output>/rephrase_cache/ or --cache DIR), "
                     "so a rerun after a crash asks nothing twice. The API key is read from $OPENAI_API_KEY "
                     "(or --api-key-env VAR) and written nowhere.", handler=cmd_rephrase)
    rephrase.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUTS_HELP)
    add_params(rephrase, STAGES["rephrase"].params, skip=("keep_input",))
    rephrase.add_argument("--dry-run", action="store_true",
                          help="print the requests and the tokens in and out a run would take, send nothing")
    add_run_options(rephrase)

    export = _verb(sub, "export", "tokenize and export bucketed training shards (dataset decomposition)",
                   "Run read -> tokenize -> decompose -> export -> write on the inputs: one datasets "
                   "save_to_disk directory per bucket under <output>/bucket_<i>/ (per domain "
                   "<output>/<domain>/bucket_<i>/ with --by-domain or --mixture), the tokenizer beside "
                   "them, and manifest.json with tokens and sequences per bucket. <output>/kept/ lists "
                   "the documents (id, source, domain, n_tokens).", handler=cmd_export)
    export.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUTS_HELP)
    d = STAGES["decompose"].params()
    export.add_argument("--buckets", default=None, metavar="LO..HI",
                        help="bucket exponents: chunks of 2**i + 1 tokens for i in LO..HI (decompose's "
                        f"min_log2..max_log2; default {d.min_log2}..{d.max_log2}, the paper's)")
    for stage, fields in EXPORT_FLAGS:
        add_params(export, STAGES[stage].params, only=fields)
    add_run_options(export)

    validate = _verb(sub, "validate", "train small models on curated mixes and compare their held-out loss",
                     "Run the config's [validate] table: the flow up to the base stage, one shared "
                     "tokenizer, the held-out set exported per domain, each variant's mix exported, then "
                     "one small model per variant and seed trained at the same token budget and evaluated "
                     "(loss and bits per byte per domain). Writes <output>/validate.json, a table in "
                     "<output>/report.md and <output>/plots/validate-loss.png.", handler=cmd_validate)
    validate.add_argument("config", metavar="CONFIG", help="flow config (TOML) with a [validate] table")
    add_run_options(validate, only=("output", "master", "overwrite"))

    serve = _verb(sub, "serve", "serve configs on their [schedule] from a Prefect server",
                  "Turn each config's [schedule] (cron = \"0 3 * * 1\" or interval = SECONDS, timezone) into a "
                  "Prefect deployment of the flow winnow-scheduled and serve them from this process until "
                  "Ctrl-C, against the server PREFECT_API_URL names (start one with `prefect server start`). "
                  "Each scheduled run resumes its output's saved state; {date} in `output` is the scheduled "
                  "date, for a snapshot per run.", handler=cmd_serve)
    serve.add_argument("configs", nargs="+", metavar="CONFIG", help="flow configs (TOML) with a [schedule] table")

    runs = _verb(sub, "runs", "list recent Winnow flow runs on the Prefect server",
                 "Name, flow, state, start, duration and output directory of the latest runs of "
                 "winnow-scheduled and winnow-curate, from the server PREFECT_API_URL names (else the local "
                 "ephemeral one).", handler=cmd_runs)
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="how many runs (default 20)")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")

    status = _verb(sub, "status", "show what a rerun into an output directory would skip and redo",
                   "Each step's saved state in OUTPUT: done (a rerun skips it), stale and why (inputs, "
                   "parameters or code changed since), or missing, with the rows it kept and the disk "
                   "its saved rows hold. Compared against the config the last run there started with, "
                   "or against --config. Runs nothing.", handler=cmd_status)
    status.add_argument("output", metavar="OUTPUT", help="an output directory a Winnow run wrote")
    status.add_argument("--config", metavar="CONFIG", help="compare against this flow config (TOML) instead")
    status.add_argument("--json", action="store_true", help="print the state as JSON")

    warm = _verb(sub, "warm", "build the JVM archive that makes every later command start faster",
                 "Record the classes a small curation run loads into a class-data-sharing archive for "
                 "this Java and Spark install (about 180 MB under ~/.cache/winnow/jvm, built once; `make` "
                 "runs it). Later commands' JVMs map it instead of loading Spark's jars: on a 2-core machine "
                 "about 3 s less to start. WINNOW_JVM_ARCHIVE=0 turns it off.", handler=cmd_warm)
    warm.add_argument("--force", action="store_true", help="rebuild the archive even if one exists")

    from .train_lm import LmSpec

    lm = _verb(sub, "train-lm", "train a reference language model for the perplexity and PreSelect scorers",
               "Train a small LM (training/, as `winnow validate` does) on INPUT... and write DIR/lm.pt "
               "(weights, tokenizer, config and the held-out bits per byte it reached), DIR/tokenizer.json "
               "and DIR/lm.json.", handler=cmd_train_lm)
    lm.add_argument("inputs", nargs="+", metavar="INPUT", help="training corpora (any format `read` takes)")
    lm.add_argument("--output", "-o", required=True, metavar="DIR", help="the reference LM directory")
    add_params(lm, LmSpec)
    lm.add_argument("--overwrite", action="store_true", help="replace an existing LM directory")
    add_run_options(lm, only=("master",))

    train = _verb(sub, "train-scorer", f"train a quality scorer ({', '.join(registry.trainable())})",
                  "Train a scorer from positives and negatives; `winnow train-scorer KIND --help` shows "
                  "its settings.", handler=cmd_train_scorer)
    by_kind = train.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in registry.trainable():
        trainer = registry.trainer(kind)
        one = by_kind.add_parser(kind, help=registry.get(kind).summary, description=trainer.summary,
                                 epilog=EPILOG)
        labelled = kind != "preselect"   # PreSelect's labels come from reference LMs
        one.add_argument("--positives", "-p", nargs="+", required=labelled, metavar="INPUT",
                         help="high-quality reference corpora (any format `read` takes)"
                         + ("" if labelled else "; with --negatives, instead of --models/--train-models"))
        one.add_argument("--negatives", "-n", nargs="+", required=labelled, metavar="INPUT", help="raw pool corpora")
        one.add_argument("--output", "-o", required=True, metavar="MODEL", help="where to save the model")
        if not labelled:
            from .preselect import PreselectSpec

            one.add_argument("--models", nargs="+", metavar="DIR", default=[],
                             help="reference LMs (from `winnow train-lm`) of one family, 5 or more")
            one.add_argument("--seed-docs", nargs="+", metavar="INPUT", default=[],
                             help="seed documents, disjoint from what the models trained on")
            one.add_argument("--lm-data", nargs="+", metavar="INPUT", default=[],
                             help="with --train-models: the text the family trains on (fold 0; fold 1 is "
                             "the seed set unless --seed-docs is given)")
            one.add_argument("--abilities", nargs="+", type=float, metavar="S", default=[],
                             help="each model's ability score (higher: more able) instead of measuring "
                             "bits per byte on the ability split")
            add_params(one, PreselectSpec, skip=("seed",))
        add_params(one, TrainSpec)
        add_params(one, trainer.params)
        one.add_argument("--overwrite", action="store_true", help="replace an existing model file")
        add_run_options(one, only=("master",))
    return parser


class _RichProgress:
    """A spinner per stage while it runs, a tick and its counts when it ends."""

    def __init__(self, console):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def stage_started(self, name: str) -> None:
        self._tasks[name] = self._progress.add_task(f"[bold]{name}[/] running", total=1)

    def training_finished(self, name: str, report: dict) -> None:
        self._progress.update(
            self._tasks[name], completed=1,
            description=f"[bold]{name}[/] {report.get('summary', '')}, held-out {report.get('heldout', '')}",
        )

    def run_started(self, name: str, total: int) -> None:
        self._tasks[name] = self._progress.add_task(f"[bold]{name}[/]", total=total)

    def run_advanced(self, name: str, done: int, note: str) -> None:
        self._progress.update(self._tasks[name], completed=done, description=f"[bold]{name}[/] {note}")

    def stage_note(self, name: str, note: str) -> None:
        """A live line beside a running stage (rephrase's requests and tokens/s)."""
        if name in self._tasks:
            self._progress.update(self._tasks[name], description=f"[bold]{name}[/] running: {note}")

    def stage_finished(self, record) -> None:
        why = (record.resume or "").removeprefix("ran: ")
        self._progress.update(
            self._tasks[record.name], completed=1,
            description=f"[bold]{record.name}[/] in {record.n_in:,}"
            + (f"  added {record.added:,}" if record.added else "") + f"  kept {record.kept:,}  removed {record.removed:,}"
            + (f"  [dim](ran: {why})[/]" if why and why != "no saved state" else ""),
        )

    def stage_skipped(self, record) -> None:
        self._tasks[record.name] = self._progress.add_task(
            f"[bold]{record.name}[/] skipped, unchanged: in {record.n_in:,}  kept {record.kept:,}  "
            f"removed {record.removed:,}", total=1, completed=1)


def _stage_table(records):
    from rich.table import Table

    from .report import ACCOUNTING, STAGE_HEADER, stage_table_rows

    table = Table(title=f"stages ({ACCOUNTING})")
    for i, name in enumerate(STAGE_HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in stage_table_rows(records):
        table.add_row(*row)
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from .config import config_for_inputs, load_config, with_overrides

    if args.config is None:
        if not args.input or not args.output:
            raise UsageError("give a CONFIG, or --input PATH and --output DIR")
        cfg = config_for_inputs(args.input, str(Path(args.output).resolve()), args.domain, args.domain_field)
    else:
        cfg = load_config(args.config)
        cfg = with_overrides(cfg, inputs=args.input, domain=args.domain, domain_field=args.domain_field,
                             output=args.output)
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite,
                         engine=getattr(args, "engine", None))
    return _run_and_show(cfg)


def dedup_stage(args: argparse.Namespace) -> dict:
    """The [[stages]] entry `winnow dedup`'s options stand for."""
    from pipelines import STAGES

    from .options import given

    return {"stage": "dedup_minhash", **given(args, STAGES["dedup_minhash"].params)}


def cmd_dedup(args: argparse.Namespace) -> int:
    from pipelines.dedup_minhash import explain

    from .config import config_for_inputs, stage_params, with_overrides

    stage = dedup_stage(args)
    params = stage_params("dedup_minhash", {k: v for k, v in stage.items() if k != "stage"}, "dedup")
    if args.explain:
        print(explain(params))
        return 0
    if not args.inputs or not args.output:
        raise UsageError("give INPUT... and --output DIR (or --explain)")
    cfg = config_for_inputs(args.inputs, str(Path(args.output).resolve()), args.domain, args.domain_field)
    cfg = cfg.model_copy(update={"stages": [stage]})
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite,
                         engine=getattr(args, "engine", None))
    return _run_and_show(cfg)


def cmd_rephrase(args: argparse.Namespace) -> int:
    from pipelines.rephrase import RephraseParams

    from .config import config_for_inputs, stage_params, with_overrides
    from .options import given

    if not args.inputs or not args.output:
        raise UsageError("give INPUT... and --output DIR")
    stage: dict = {"stage": "rephrase", "keep_input": False, **given(args, RephraseParams)}
    if stage.get("backend") == "transformers" and stage.get("model"):
        stage["model"] = str(Path(stage["model"]).expanduser().resolve())
    params = stage_params("rephrase", {k: v for k, v in stage.items() if k != "stage"}, "rephrase")
    cfg = config_for_inputs(args.inputs, str(Path(args.output).resolve()), args.domain, args.domain_field)
    cfg = cfg.model_copy(update={"stages": [stage]})
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite, engine=getattr(args, "engine", None))
    if args.dry_run:
        return _rephrase_dry_run(cfg, params)
    from pipelines.rephrase import check_backend

    check_backend(params)  # a wrong URL, key or model name: one line now, before Spark starts
    return _run_and_show(cfg)


def _rephrase_dry_run(cfg, params) -> int:
    """`winnow rephrase --dry-run`: the first request of each style and the totals; nothing sent,
    nothing written."""
    import json as _json

    from pipelines import read
    from pipelines.rephrase import dry_run
    from pipelines.spark import get_spark
    from pipelines.stage import StageContext

    from .config import input_specs

    spark = get_spark(cfg.spark.master)
    docs = read.apply(None, read.ReadParams(input_specs(cfg)), StageContext(spark=spark)).kept
    cache = params.cache_dir(cfg.output)
    found = dry_run(docs, params, cache)
    for style, body in found["first_request"].items():
        print(f"first request, style {style}:")
        print(_json.dumps(body, indent=2, ensure_ascii=False))
    print("style\tdocuments\trequests\tcached\ttokens_in\ttokens_out_expected\ttokens_out_max")
    for style, c in found["per_style"].items():
        print(f"{style}\t{c['documents']:,}\t{c['requests']:,}\t{c['cached']:,}\t{c['tokens_in']:,}\t"
              f"{c['tokens_out_expected']:,}\t{c['tokens_out_max']:,}")
    how = "counted with " + params.tokenizer if params.tokenizer else (
        "counted with the model's tokenizer" if params.backend == "transformers" else
        "estimated at 4 characters per token (give --tokenizer to count)")
    print(f"dry run: nothing sent. Tokens {how}; tokens_in includes the prompt; tokens_out_expected "
          "assumes an answer as long as its chunk.")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from filters.base import ScorerSpec

    from .output import claim

    from .config import config_for_inputs, with_overrides

    if not args.inputs or not args.output:
        raise UsageError("give INPUT... and --output DIR")
    if not args.scorer:
        raise UsageError("give at least one --scorer, e.g. --scorer heuristics or --scorer dclm=model.bin")
    specs = [ScorerSpec.parse(s) for s in args.scorer]
    scorers = []
    for spec in specs:
        table: dict = {"kind": spec.kind}
        if spec.model:
            model = spec.model
            if spec.kind != "langid" or model.endswith(".json"):
                model = str(Path(model).expanduser().resolve())
            table["model"] = model
        if spec.name:
            table["name"] = spec.name
        for key, value in spec.options.items():   # ,KEY=VALUE options; a KenLM's sp_model is a path
            table[key] = str(Path(value).expanduser().resolve()) if key == "sp_model" and isinstance(value, str) \
                else value
        scorers.append(table)
    stages: list[dict] = [{"stage": "score", "scorers": scorers}]
    column = args.select_score or specs[0].column
    if args.top_fraction is not None:
        stages.append({"stage": "select", "score": column, "top_fraction": args.top_fraction, "mark": True})
    cfg = config_for_inputs(args.inputs, str(Path(args.output).resolve()), args.domain, args.domain_field)
    columns = ["id", "source", "domain", "score_*", "rule_*"] + (["selected"] if args.top_fraction is not None else [])
    if args.with_text:
        columns.insert(3, "text")
    cfg = cfg.model_copy(update={"stages": stages, "write": cfg.write.model_copy(update={"columns": columns})})
    from .config import plans

    plans(cfg)  # parameter errors (a bad fraction, a duplicate name) before Spark starts
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite,
                         engine=getattr(args, "engine", None))
    code = _run_and_show(cfg)
    if args.top_fraction is not None:
        from pipelines.spark import get_spark

        spark = get_spark(cfg.spark.master)
        kept = spark.read.parquet(str(Path(cfg.output) / "kept"))
        selected = str(Path(cfg.output) / "selected")
        claim(cfg.output, selected)
        kept.where("selected").drop("selected").write.mode("overwrite").option("compression", "zstd").parquet(selected)
        print(f"selection ({column}, top {args.top_fraction:g}): {selected}")
    return code


def export_stages(args: argparse.Namespace) -> list[dict]:
    """The [[stages]] `winnow export`'s options stand for."""
    from pipelines import STAGES

    from .config import parse_buckets
    from .options import given

    stages = {name: {"stage": name, **given(args, STAGES[name].params, only=fields)} for name, fields in EXPORT_FLAGS}
    if args.buckets is not None:
        stages["decompose"]["min_log2"], stages["decompose"]["max_log2"] = parse_buckets(args.buckets, "--buckets")
    if stages["export"].get("layout", "decomposition") != "decomposition":
        del stages["decompose"]
    return list(stages.values())


def cmd_export(args: argparse.Namespace) -> int:
    from .config import config_for_inputs, plans, with_overrides

    if not args.inputs or not args.output:
        raise UsageError("give INPUT... and --output DIR")
    cfg = config_for_inputs(args.inputs, str(Path(args.output).resolve()), args.domain, args.domain_field)
    write = cfg.write.model_copy(update={"columns": ["id", "source", "domain", "n_tokens", "dropped_tokens"]})
    cfg = cfg.model_copy(update={"stages": export_stages(args), "write": write})
    plans(cfg)  # parameter errors before Spark starts
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite,
                         engine=getattr(args, "engine", None))
    return _run_and_show(cfg)


def cmd_train_lm(args: argparse.Namespace) -> int:
    from pipelines.spark import get_spark

    from .options import given
    from .train_lm import LmSpec, train_lm

    out = Path(args.output).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    spec = LmSpec(inputs=tuple(str(Path(p).expanduser().resolve()) for p in args.inputs), output=str(out),
                  **given(args, LmSpec))
    spark = get_spark(args.master or "local[*]")
    info = train_lm(spark, spec)
    print(f"reference LM: {out / 'lm.pt'} ({info['parameters']:,} parameters, {info['tokens_trained']:,} tokens, "
          f"{info['documents']['train']:,} documents, {info['seconds']} s)")
    bpb = info["heldout_bpb"]
    print(f"held-out bits per byte: {bpb:.4f} ({info['documents']['heldout']:,} documents)" if bpb is not None
          else "held-out bits per byte: none (no held-out tokens)")
    return 0


def _train_preselect(args: argparse.Namespace, out: Path) -> int:
    from filters.preselect import PreselectTrainParams
    from pipelines.spark import get_spark

    from .options import given
    from .preselect import PreselectSpec, train_preselect

    def paths(values):
        return tuple(str(Path(p).expanduser().resolve()) for p in values)

    params = PreselectTrainParams(**given(args, PreselectTrainParams))
    spec = PreselectSpec(output=str(out), seed_docs=paths(args.seed_docs), models=paths(args.models),
                         abilities=tuple(args.abilities), lm_data=paths(args.lm_data), params=params,
                         **{k: v for k, v in given(args, PreselectSpec).items() if k not in ("params", "seed")},
                         **({"seed": args.seed} if args.seed is not None else {}))
    spark = get_spark(args.master or "local[*]")
    report = train_preselect(spark, spec)
    print(f"model: {report['output']} (report: {report['output']}.json)")
    for m in report["models"]:
        shown = f"bits per byte {m['bpb']:.4f}" if not m["given"] else f"ability {m['ability']}"
        print(f"  rank {m['rank']}: {m['path']} ({shown})")
    labels = report["labels"]
    print(f"{report['seed_documents']:,} seed documents; {labels['positives']:,} positives (all pairs concordant), "
          f"{labels['negatives']:,} negatives; held-out accuracy {report['heldout_accuracy']}, "
          f"ROC-AUC {report['heldout_roc_auc']}")
    return 0


def cmd_train_scorer(args: argparse.Namespace) -> int:
    import json

    from filters import registry
    from pipelines import read
    from pipelines.read import InputSpec
    from pipelines.spark import get_spark

    from .options import given
    from .train import TrainSpec, train_scorer

    out = Path(args.output).expanduser().resolve()
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    if args.kind == "preselect" and not args.positives:
        return _train_preselect(args, out)
    if not args.positives or not args.negatives:
        raise UsageError("give --positives and --negatives")
    spec = TrainSpec(kind=args.kind, output=str(out),
                     positives=tuple(str(Path(p).expanduser().resolve()) for p in args.positives),
                     negatives=tuple(str(Path(p).expanduser().resolve()) for p in args.negatives),
                     params=registry.trainer(args.kind).params(**given(args, registry.trainer(args.kind).params)),
                     **given(args, TrainSpec))
    read.expand_inputs(tuple(InputSpec(path=p, source="x") for p in spec.positives + spec.negatives))
    spark = get_spark(args.master or "local[*]")
    report = train_scorer(spark, spec)
    pos, neg = report["positives"], report["negatives"]
    facts = ", ".join(f"{k} {v:,}" for k, v in report["model"].items() if isinstance(v, int))
    print(f"model: {report['output']} ({report['model_bytes'] / 1e6:.1f} MB; {facts})")
    print(f"trained on {pos['trained']:,} positives and {neg['trained']:,} negatives in {report['seconds']} s")
    print(f"held-out ROC-AUC: {report['heldout_roc_auc']} ({pos['heldout']:,} positives, {neg['heldout']:,} negatives)")
    out.with_suffix(out.suffix + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _warm_run(spark) -> None:
    """A small curation run in a temporary directory: what the archive should hold is what runs load."""
    import json
    import tempfile

    from .config import config_for_inputs
    from .curate import run_curation

    with tempfile.TemporaryDirectory(prefix="winnow-warm-") as tmp:
        corpus = Path(tmp) / "warm.jsonl"
        text = "a short document about the warm-up run of winnow with a few words in it"
        corpus.write_text("".join(json.dumps({"id": str(i), "text": f"{text} {i % 3}"}) + "\n" for i in range(20)))
        cfg = config_for_inputs([str(corpus)], str(Path(tmp) / "out"), None, None)
        cfg = cfg.model_copy(update={"stages": [{"stage": "dedup_exact"}, {"stage": "dedup_minhash"},
                                                {"stage": "heuristics"}]})
        run_curation(cfg, spark=spark)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.configs)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from .serve import runs

    if args.limit < 1:
        raise UsageError("--limit: give a positive number")
    found = runs(args.limit)
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    table = Table(title="Winnow flow runs, newest first")
    for name in ("name", "flow", "state", "start", "seconds", "output"):
        table.add_column(name, justify="right" if name == "seconds" else "left")
    for r in found:
        table.add_row(r["name"], r["flow"], r["state"], r["start"], "" if r["seconds"] is None else f"{r['seconds']:.1f}",
                      r["output"])
    Console().print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from .config import load_config
    from .curate import status

    cfg = load_config(args.config) if args.config else None
    result = status(args.output, cfg)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    table = Table(title=f"saved state of {result['output']}")
    for name, justify in (("step", "left"), ("state", "left"), ("why", "left"), ("kept", "right"), ("disk", "right")):
        table.add_column(name, justify=justify)
    for s in result["steps"]:
        table.add_row(s["step"], s["state"], s["why"], "" if s["kept"] is None else f"{s['kept']:,}",
                      _size(s["disk_bytes"]))
    console = Console()
    console.print(table)
    console.print(f"saved state (_work): {_size(result['state_bytes'])}; output directory: {_size(result['output_bytes'])}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def cmd_warm(args: argparse.Namespace) -> int:
    from pipelines.spark import build_jvm_archive, jvm_archive_path

    path = jvm_archive_path()
    if path is None:
        raise UsageError("no java binary found; install Java 17 or set JAVA_HOME")
    if path.is_file() and not args.force:
        print(f"JVM archive: {path} (exists; --force rebuilds it)")
        return 0
    path = build_jvm_archive(_warm_run)
    print(f"JVM archive: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return 0


def _run_and_show(cfg, validate_only: bool = False) -> int:
    from contextlib import nullcontext

    from rich.console import Console

    from .curate import check_train_outputs, run_curation
    from .output import locked, prepare
    from .validate import base_stage, report_lines, run_validate

    import datetime as dt

    from .config import dated

    cfg = dated(cfg, dt.datetime.now(dt.timezone.utc))  # {date} in `output`: today's, for a run by hand
    console = Console(stderr=False)
    output = Path(cfg.output).resolve()
    base = None
    # validation writes into the output after the run: the lock spans both (the run alone locks itself)
    with locked(output) if cfg.validate_ is not None else nullcontext(), _RichProgress(console) as progress:
        if validate_only:
            prepare(output, cfg.overwrite)
            check_train_outputs(cfg)
        else:
            keep = None
            if cfg.validate_ is not None:
                base = str(output / "validate" / "base")
                keep = (base_stage(cfg) or "read", base)
            summary = run_curation(cfg, progress=progress, keep=keep)
        if cfg.validate_ is not None:  # Spark starts inside only if a step needs it
            result = run_validate(cfg, None, progress, base=base)
    if not validate_only:
        console.print(_stage_table(summary.stages))
        skipped = summary.stages[0].stats.get("skipped_files") if summary.stages[0].stage == "read" else 0
        if skipped:
            examples = summary.stages[0].stats.get("skipped_examples", [])
            console.print(f"read: {skipped:,} files in the input directories were not read (hidden, _-prefixed or "
                          f"not .jsonl/.json/.ndjson[.gz|.zst]/.parquet), e.g. {', '.join(examples[:3])}",
                          markup=False, highlight=False)
        for stage in summary.stages:
            if stage.stats.get("mixture_table"):
                console.print(f"{stage.name}: what the mixture yields")
                console.print(stage.stats["mixture_table"].rstrip(), markup=False, highlight=False)
        console.print(f"kept documents: {summary.output / 'kept'}")
    if cfg.validate_ is not None:
        console.print("\n".join(report_lines(result)[2:-2]), markup=False, highlight=False)
        console.print(f"validation: {output / 'validate.json'}")
    console.print(f"report: {output / 'report.md'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_config, with_overrides

    cfg = load_config(args.config)
    if cfg.validate_ is None:
        raise UsageError(f"{args.config} has no [validate] table")
    cfg = with_overrides(cfg, output=args.output, master=args.master, overwrite=args.overwrite,
                         engine=getattr(args, "engine", None))
    return _run_and_show(cfg, validate_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_environment(getattr(args, "verbose", False))
    from core.errors import WinnowError

    try:
        return args.handler(args)
    except WinnowError as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("winnow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # Spark start-up failures are the user's environment, not a bug
        name = type(exc).__name__
        raised = worker_error(exc)
        if raised is not None:  # a WinnowError raised inside a Spark task (rephrase's BackendError)
            print(f"winnow: error: {raised}", file=sys.stderr)
            return 2
        if "JAVA_GATEWAY_EXITED" in str(exc) or name == "PySparkRuntimeError":
            print("winnow: error: could not start Spark; is Java 17 installed (apt-get install "
                  "openjdk-17-jre-headless) and JAVA_HOME right?", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
