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
OVERWRITE_HELP = ("replace an earlier Winnow run in the output directory: deletes only the entries its "
                  ".winnow-owned.json lists (a directory without one is never written into); "
                  "--no-overwrite overrides overwrite = true in a config")


def _quiet_environment(verbose: bool) -> None:
    """Settings that must exist before Prefect or Spark are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipelines.spark import configure_environment

    configure_environment()


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The options every command over INPUT... shares."""
    parser.add_argument("--domain", metavar="NAME", default=None, help="domain of the inputs")
    parser.add_argument("--domain-field", metavar="FIELD", default=None,
                        help="records' own domain: a string field of each record (e.g. domain), else --domain")
    parser.add_argument("--master", metavar="URL", default=None, help="Spark master (default local[*])")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=None,
                        help=OVERWRITE_HELP)
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winnow",
        description="Winnow curates pretraining data: read corpora, deduplicate, score and select, "
        "and write Parquet shards with a manifest and a per-stage report.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a curation flow from a TOML config",
        description="Run a curation flow: read the inputs, run the configured stages in order, write "
        "<output>/kept/ (Parquet), <output>/removed/<stage>/, manifest.json and report.md. "
        "Spark runs embedded (local[*]) unless a master URL is given; Prefect runs in ephemeral "
        "mode unless PREFECT_API_URL points at a server.",
        epilog=EPILOG,
    )
    run.add_argument("config", nargs="?", metavar="CONFIG",
                     help="flow config (TOML). Optional when --input and --output are given: then the "
                     "flow is read -> write.")
    run.add_argument("--input", "-i", action="append", metavar="PATH", default=None,
                     help="an input file, directory, glob or saved `datasets` directory; repeatable. "
                     "Replaces the config's inputs; source = the file's stem, domain = --domain.")
    run.add_argument("--domain", metavar="NAME", default=None,
                     help="domain of the --input files (default: 'default'), or of every config input")
    run.add_argument("--output", "-o", metavar="DIR", default=None,
                     help="output directory (default: the config's `output`)")
    run.add_argument("--master", metavar="URL", default=None,
                     help="Spark master: local[*] (default), spark://host:7077, yarn, k8s://..., "
                     "or a Spark Connect address sc://host:15002")
    run.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=None, help=OVERWRITE_HELP)
    run.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")

    dedup = sub.add_parser(
        "dedup",
        help="remove near-duplicates (MinHash-LSH) from input files",
        description="Run read -> dedup_minhash -> write on the inputs: the same stage and output "
        "layout as `winnow run` with a [[stages]] entry `stage = \"dedup_minhash\"`. Removed rows "
        "go to <output>/removed/dedup_minhash/ with reason 'near-duplicate of <id>'.",
        epilog=EPILOG,
    )
    dedup.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="input files, directories, globs or saved `datasets` directories")
    dedup.add_argument("--output", "-o", metavar="DIR", default=None, help="output directory")
    dedup.add_argument("--threshold", type=float, default=None, metavar="J",
                       help="Jaccard similarity of word n-gram sets above which documents are "
                       "near-duplicates (default 0.8)")
    dedup.add_argument("--num-perm", type=int, default=None, metavar="K",
                       help="permutations per MinHash signature (default 256)")
    dedup.add_argument("--ngram", type=int, default=None, metavar="N", help="words per shingle (default 5)")
    dedup.add_argument("--bands", type=int, default=None, metavar="B",
                       help="LSH bands; with --rows, instead of the S-curve optimization")
    dedup.add_argument("--rows", type=int, default=None, metavar="R", help="rows (values) per band")
    dedup.add_argument("--probes", type=int, default=None, metavar="P",
                       help="groupings of the signature values into bands (default 2; 1 = plain LSH)")
    dedup.add_argument("--fp-weight", type=float, default=None, metavar="W",
                       help="weight of the false-positive area when choosing bands x rows (default 0.02)")
    dedup.add_argument("--verify", action="store_true",
                       help="check every candidate pair on exact Jaccard (default: signature "
                       "agreement, exact Jaccard only for pairs near the threshold)")
    dedup.add_argument("--no-check", action="store_true",
                       help="every LSH candidate pair is a duplicate (plain LSH, as datasketch)")
    dedup.add_argument("--per-source", action="store_true", help="compare documents of the same source only")
    dedup.add_argument("--score-column", metavar="COL", default=None,
                       help="keep the document with the highest COL in each component, not the first")
    dedup.add_argument("--seed", type=int, default=None, help="permutation seed (default 1)")
    dedup.add_argument("--explain", action="store_true",
                       help="print the chosen bands x rows and collision probabilities, then exit")
    _run_options(dedup)

    score = sub.add_parser(
        "score",
        help="score documents with quality scorers (heuristics, dclm, langid)",
        description="Run read -> score [-> select] -> write on the inputs. <output>/kept/ gets one "
        "Parquet row per document: id, source, domain and a score_<name> column per scorer (the "
        "heuristics scorer adds rule_<rule> pass/fail columns), plus text with --with-text. The "
        "report has a quantile table and a histogram per score (<output>/plots/).",
        epilog=EPILOG,
    )
    score.add_argument("inputs", nargs="*", metavar="INPUT", help="input files, directories, globs or saved `datasets` directories")
    score.add_argument("--scorer", "-s", action="append", default=None, metavar="SPEC",
                       help="KIND, KIND=MODEL or NAME:KIND=MODEL; repeatable. dclm=PATH (a model from "
                       "`winnow train-scorer dclm`), heuristics[=CONFIG.json], langid[=LANG] (default en)")
    score.add_argument("--output", "-o", metavar="DIR", default=None, help="output directory")
    score.add_argument("--with-text", action="store_true", help="write the text beside the scores")
    score.add_argument("--top-fraction", type=float, default=None, metavar="F",
                       help="also select the best fraction F of documents by --select-score: kept/ "
                       "gets a boolean `selected` column and <output>/selected/ the selected rows")
    score.add_argument("--select-score", metavar="COL", default=None,
                       help="score column to select on (default: the first scorer's)")
    _run_options(score)

    export = sub.add_parser(
        "export",
        help="tokenize and export bucketed training shards (dataset decomposition)",
        description="Run read -> tokenize -> decompose -> export -> write on the inputs: one "
        "datasets save_to_disk directory per bucket under <output>/bucket_<i>/ (per domain "
        "<output>/<domain>/bucket_<i>/ with --by-domain or --mixture), the tokenizer beside them, "
        "and manifest.json with tokens and sequences per bucket. <output>/kept/ lists the "
        "documents (id, source, domain, n_tokens).",
        epilog=EPILOG,
    )
    export.add_argument("inputs", nargs="*", metavar="INPUT", help="input files, directories, globs or saved `datasets` directories")
    export.add_argument("--output", "-o", metavar="DIR", default=None, help="output directory")
    export.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a tokenizers tokenizer.json (default: train byte-level BPE on a sample)")
    export.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of a trained tokenizer (default 8192)")
    export.add_argument("--buckets", default="8..13", metavar="LO..HI",
                        help="bucket exponents: chunks of 2**i + 1 tokens for i in LO..HI (default 8..13, the paper's)")
    export.add_argument("--tail", choices=["keep", "drop"], default="keep",
                        help="remainders shorter than the smallest bucket: keep in bucket_tail, or drop and count")
    export.add_argument("--layout", choices=["decomposition", "concat"], default="decomposition",
                        help="decomposition (default) or the concat-and-chunk baseline")
    export.add_argument("--seq-len", type=int, default=2048, help="concat layout: inputs per window (default 2048)")
    export.add_argument("--mixture", metavar="FILE", default=None,
                        help='JSON {"weights": {domain: w}, "budget": tokens, "max_repeats": r, "schedule": {...}}')
    export.add_argument("--by-domain", action="store_true", help="one dataset per domain and bucket")
    export.add_argument("--shard-rows", type=int, default=100_000, help="rows per shard file (default 100000)")
    export.add_argument("--seed", type=int, default=0, help="seed of the tokenizer sample and the random splits")
    _run_options(export)

    validate = sub.add_parser(
        "validate",
        help="train small models on curated mixes and compare their held-out loss",
        description="Run the config's [validate] table: the flow up to the base stage, one shared "
        "tokenizer, the held-out set exported per domain, each variant's mix exported, then one small "
        "model per variant and seed trained at the same token budget and evaluated (loss and bits per "
        "byte per domain). Writes <output>/validate.json, a table in <output>/report.md and "
        "<output>/plots/validate-loss.png.",
        epilog=EPILOG,
    )
    validate.add_argument("config", metavar="CONFIG", help="flow config (TOML) with a [validate] table")
    validate.add_argument("--output", "-o", metavar="DIR", default=None,
                          help="output directory (default: the config's `output`)")
    validate.add_argument("--master", metavar="URL", default=None, help="Spark master (default local[*])")
    validate.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=None, help=OVERWRITE_HELP)
    validate.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")

    train = sub.add_parser(
        "train-scorer",
        help="train a quality scorer (dclm: fastText, high-quality positives against raw negatives)",
        description="Train the DCLM fastText classifier (METHODS.md 1.2): __label__hq for positives, "
        "__label__cc for negatives, wordNgrams 2, lr 0.1, dim 100, epoch 5; text lines are "
        "' '.join(text.strip().splitlines()). A held-out fraction of each side measures ROC-AUC.",
        epilog=EPILOG,
    )
    train.add_argument("kind", choices=["dclm"], help="the scorer to train")
    train.add_argument("--positives", "-p", nargs="+", required=True, metavar="INPUT",
                       help="high-quality reference corpora (any format `read` takes)")
    train.add_argument("--negatives", "-n", nargs="+", required=True, metavar="INPUT", help="raw pool corpora")
    train.add_argument("--output", "-o", required=True, metavar="MODEL", help="where to save the model (.bin)")
    train.add_argument("--max-per-class", type=int, default=200_000, metavar="N",
                       help="documents per label at most, chosen by a seeded hash (default 200000, as DCLM)")
    train.add_argument("--heldout", type=float, default=0.1, metavar="F",
                       help="fraction of each side held out to measure ROC-AUC (default 0.1)")
    train.add_argument("--epoch", type=int, default=5)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--dim", type=int, default=100)
    train.add_argument("--word-ngrams", type=int, default=2)
    train.add_argument("--bucket", type=int, default=None,
                       help="fastText hash rows for word n-grams (default: sized from the training "
                       "set's distinct bigrams, see README)")
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--master", metavar="URL", default=None, help="Spark master (default local[*])")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    train.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")
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
        auc = report.get("heldout_roc_auc")
        self._progress.update(
            self._tasks[name], completed=1,
            description=f"[bold]{name}[/] {report['positives']['trained']:,} positives, "
            f"{report['negatives']['trained']:,} negatives, held-out ROC-AUC {auc}",
        )

    def run_started(self, name: str, total: int) -> None:
        self._tasks[name] = self._progress.add_task(f"[bold]{name}[/]", total=total)

    def run_advanced(self, name: str, done: int, note: str) -> None:
        self._progress.update(self._tasks[name], completed=done, description=f"[bold]{name}[/] {note}")

    def stage_finished(self, record) -> None:
        self._progress.update(
            self._tasks[record.name], completed=1,
            description=f"[bold]{record.name}[/] in {record.n_in:,}  kept {record.kept:,}  removed {record.removed:,}",
        )


def _stage_table(records):
    from rich.table import Table

    from .report import STAGE_HEADER, stage_table_rows

    table = Table(title="stages (in = kept + removed)")
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
        cfg = config_for_inputs(args.input, str(Path(args.output).resolve()), args.domain)
    else:
        cfg = load_config(args.config)
        cfg = with_overrides(cfg, inputs=args.input, domain=args.domain, output=args.output)
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite)
    return _run_and_show(cfg)


def dedup_stage(args: argparse.Namespace) -> dict:
    """The [[stages]] entry `winnow dedup`'s options stand for."""
    if args.verify and args.no_check:
        raise UsageError("--verify and --no-check contradict each other")
    stage: dict = {"stage": "dedup_minhash"}
    for opt, key in [("threshold", "threshold"), ("num_perm", "num_perm"), ("ngram", "ngram"),
                     ("bands", "bands"), ("rows", "rows"), ("fp_weight", "fp_weight"), ("probes", "probes"),
                     ("score_column", "score_column"), ("seed", "seed")]:
        if getattr(args, opt) is not None:
            stage[key] = getattr(args, opt)
    if args.verify:
        stage["check"] = "exact"
    if args.no_check:
        stage["check"] = "none"
    if args.per_source:
        stage["per_source"] = True
    return stage


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
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite)
    return _run_and_show(cfg)


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
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite)
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
    from .config import parse_buckets

    lo, hi = parse_buckets(args.buckets, "--buckets")
    tokenize: dict = {"stage": "tokenize", "seed": args.seed}
    if args.tokenizer:
        tokenize["tokenizer"] = str(Path(args.tokenizer).expanduser().resolve())
    else:
        tokenize["vocab_size"] = args.vocab_size
    export: dict = {"stage": "export", "layout": args.layout, "seq_len": args.seq_len,
                    "by_domain": args.by_domain, "shard_rows": args.shard_rows}
    if args.mixture:
        export["mixture"] = str(Path(args.mixture).expanduser().resolve())
    stages = [tokenize]
    if args.layout == "decomposition":
        stages.append({"stage": "decompose", "min_log2": int(lo), "max_log2": int(hi), "tail": args.tail, "seed": args.seed})
    return stages + [export]


def cmd_export(args: argparse.Namespace) -> int:
    from .config import config_for_inputs, plans, with_overrides

    if not args.inputs or not args.output:
        raise UsageError("give INPUT... and --output DIR")
    cfg = config_for_inputs(args.inputs, str(Path(args.output).resolve()), args.domain, args.domain_field)
    write = cfg.write.model_copy(update={"columns": ["id", "source", "domain", "n_tokens", "dropped_tokens"]})
    cfg = cfg.model_copy(update={"stages": export_stages(args), "write": write})
    plans(cfg)  # parameter errors before Spark starts
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite)
    return _run_and_show(cfg)


def cmd_train_scorer(args: argparse.Namespace) -> int:
    from filters.dclm import DclmTrainParams
    from pipelines.spark import get_spark

    from .train import TrainSpec, train_dclm

    out = Path(args.output).expanduser().resolve()
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    params = DclmTrainParams(word_ngrams=args.word_ngrams, lr=args.lr, dim=args.dim, epoch=args.epoch,
                             bucket=args.bucket, threads=args.threads, seed=args.seed)
    spec = TrainSpec(kind=args.kind, output=str(out),
                     positives=tuple(str(Path(p).expanduser().resolve()) for p in args.positives),
                     negatives=tuple(str(Path(p).expanduser().resolve()) for p in args.negatives),
                     max_per_class=args.max_per_class, heldout_fraction=args.heldout, seed=args.seed, params=params)
    from pipelines import read
    from pipelines.read import InputSpec

    read.expand_inputs(tuple(InputSpec(path=p, source="x") for p in spec.positives + spec.negatives))
    spark = get_spark(args.master or "local[*]")
    report = train_dclm(spark, spec)
    pos, neg = report["positives"], report["negatives"]
    print(f"model: {report['output']} ({report['model_bytes'] / 1e6:.1f} MB, bucket {report['bucket']:,})")
    print(f"trained on {pos['trained']:,} positives and {neg['trained']:,} negatives in {report['seconds']} s")
    print(f"held-out ROC-AUC: {report['heldout_roc_auc']} ({pos['heldout']:,} positives, {neg['heldout']:,} negatives)")
    import json

    out.with_suffix(out.suffix + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _run_and_show(cfg, validate_only: bool = False) -> int:
    from rich.console import Console

    from .curate import check_train_outputs, run_curation
    from .output import prepare
    from .validate import base_stage, report_lines, run_validate

    console = Console(stderr=False)
    output = Path(cfg.output).resolve()
    base = None
    with _RichProgress(console) as progress:
        if validate_only:
            prepare(output, cfg.overwrite)
            check_train_outputs(cfg)
        else:
            keep = None
            if cfg.validate_ is not None:
                base = str(output / "validate" / "base")
                keep = (base_stage(cfg) or "read", base)
            summary = run_curation(cfg, progress=progress, keep=keep)
        if cfg.validate_ is not None:
            from pipelines.spark import get_spark

            spark = get_spark(cfg.spark.master, shuffle_partitions=cfg.spark.shuffle_partitions,
                              driver_memory=cfg.spark.driver_memory, conf=cfg.spark.conf)
            result = run_validate(cfg, spark, progress, base=base)
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
    cfg = with_overrides(cfg, output=args.output, master=args.master, overwrite=args.overwrite)
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
        if args.command == "run":
            return cmd_run(args)
        if args.command == "dedup":
            return cmd_dedup(args)
        if args.command == "score":
            return cmd_score(args)
        if args.command == "train-scorer":
            return cmd_train_scorer(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "validate":
            return cmd_validate(args)
    except WinnowError as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("winnow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # Spark start-up failures are the user's environment, not a bug
        name = type(exc).__name__
        if "JAVA_GATEWAY_EXITED" in str(exc) or name == "PySparkRuntimeError":
            print("winnow: error: could not start Spark; is Java 17 installed (apt-get install "
                  "openjdk-17-jre-headless) and JAVA_HOME right?", file=sys.stderr)
            return 2
        raise
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
