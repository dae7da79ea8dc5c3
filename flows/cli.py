"""`winnow`: the command line over the flows.

Every error a user can cause is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    run.add_argument("--overwrite", action="store_true",
                     help="replace Winnow's outputs in a non-empty output directory")
    run.add_argument("--verbose", "-v", action="store_true", help="show Prefect's and Spark's logs")
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
    from rich.console import Console

    from .config import config_for_inputs, load_config, with_overrides
    from .curate import run_curation

    if args.config is None:
        if not args.input or not args.output:
            raise _UsageError("give a CONFIG, or --input PATH and --output DIR")
        cfg = config_for_inputs(args.input, str(Path(args.output).resolve()), args.domain)
    else:
        cfg = load_config(args.config)
        cfg = with_overrides(cfg, inputs=args.input, domain=args.domain, output=args.output)
    cfg = with_overrides(cfg, master=args.master, overwrite=args.overwrite)
    console = Console(stderr=False)
    with _RichProgress(console) as progress:
        summary = run_curation(cfg, progress=progress)
    console.print(_stage_table(summary.stages))
    console.print(f"kept documents: {summary.output / 'kept'}")
    console.print(f"report: {summary.output / 'report.md'}")
    return 0


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_environment(getattr(args, "verbose", False))
    from pipelines.stage import WinnowError

    try:
        if args.command == "run":
            return cmd_run(args)
    except (WinnowError, _UsageError) as exc:
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
