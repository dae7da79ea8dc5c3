"""Scheduled curation on a Prefect server: `winnow serve CONFIG...` and `winnow runs`.

`serve` turns each config's `[schedule]` into a Prefect deployment of the flow
`winnow-scheduled` (one per config, named after the config file; at most one run of it at a
time) and serves them all from one process, `prefect.serve`, against the server
`PREFECT_API_URL` names. Prefect's runner executes each scheduled run in a fresh subprocess that
imports this module (a module-path entrypoint, so it works from any directory): the run gets
nothing from the serving process but its parameters, the config's path. It loads the config,
puts the scheduled date into `{date}` in its output, and calls `run_curation` (and validation
when the config has `[validate]`), which resumes the output's saved state: unchanged inputs
mean nothing runs again. It publishes the output directory and report.html as link artifacts
(`winnow-output`, `winnow-report-html`), report.md as a markdown artifact (`winnow-report`) and
each plot as an image artifact (a PNG data URL, `winnow-<plot name>`).

`runs` lists the latest flow runs of `winnow-scheduled` and `winnow-curate` that started (newest
first), with the output directory each one's `winnow-output` artifact names.
"""
from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

from prefect import flow

from core.errors import ConfigError, WinnowError

FLOWS = ("winnow-scheduled", "winnow-curate")


@flow(name="winnow-scheduled", persist_result=False, log_prints=True, validate_parameters=False)
def scheduled_curation(config_path: str) -> dict[str, Any]:
    """The body of the flow `winnow-scheduled`: one scheduled run of a config."""
    from .config import dated, load_config
    from .curate import run_curation

    cfg = load_config(config_path)
    when = _scheduled_time()
    cfg = dated(cfg, when)
    summary = run_curation(cfg)
    if cfg.validate_ is not None:
        from .validate import run_validate

        run_validate(cfg, None, None, base=None)
    _publish(summary.output)
    return {"output": str(summary.output), "counts": summary.manifest["counts"],
            "ran": summary.manifest["resume"]["ran"], "skipped": summary.manifest["resume"]["skipped"]}


def _scheduled_time() -> dt.datetime:
    try:
        from prefect.runtime import flow_run

        when = flow_run.scheduled_start_time
        if when is not None:
            return dt.datetime.fromisoformat(str(when)) if not isinstance(when, dt.datetime) else when
    except Exception:  # noqa: BLE001 - outside a flow run: now
        pass
    return dt.datetime.now(dt.timezone.utc)


def _publish(output: Path) -> None:
    """The output directory and the report as artifacts of the running flow run."""
    try:
        from prefect.artifacts import create_image_artifact, create_link_artifact, create_markdown_artifact

        create_link_artifact(key="winnow-output", link=Path(output).as_uri(), link_text=str(output),
                             description="Winnow output directory")
        report = Path(output) / "report.md"
        if report.is_file():
            create_markdown_artifact(key="winnow-report", markdown=report.read_text(encoding="utf-8")[:200_000],
                                     description=f"Winnow report for {output}")
        page = Path(output) / "report.html"
        if page.is_file():
            create_link_artifact(key="winnow-report-html", link=page.as_uri(), link_text="report.html",
                                 description="the run report as one page (open it from the machine that ran it)")
        for plot in sorted((Path(output) / "plots").glob("*.png"))[:MAX_PLOT_ARTIFACTS]:
            data = base64.b64encode(plot.read_bytes()).decode("ascii")
            create_image_artifact(image_url=f"data:image/png;base64,{data}", key=_artifact_key(f"winnow-{plot.stem}"),
                                  description=f"{plot.name} of {output}")
    except Exception:  # noqa: BLE001 - an artifact is a convenience, never a reason to fail a run
        pass


# Plots published as image artifacts per scheduled run (each is a PNG of a few tens of KB).
MAX_PLOT_ARTIFACTS = 20


def _artifact_key(text: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes."""
    import re

    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")[:100]


def deployments(paths: list[str]) -> list:
    """One Prefect deployment per config, from its [schedule]; a config without one is an error."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron, Interval

    from mixers.dirnames import dir_name

    from .config import load_config

    out, names = [], set()
    for p in paths:
        path = Path(p).resolve()
        cfg = load_config(path)
        if cfg.schedule is None:
            raise ConfigError(f"{p}: no [schedule] table (cron = \"0 3 * * 1\" or interval = SECONDS)")
        s = cfg.schedule
        schedule = (Cron(s.cron, timezone=s.timezone) if s.cron is not None
                    else Interval(dt.timedelta(seconds=s.interval), timezone=s.timezone))
        name = dir_name(path.stem)
        if name in names:
            raise ConfigError(f"{p}: two configs are named {path.stem}; a deployment is named after its file")
        names.add(name)
        out.append(scheduled_curation.to_deployment(
            name=name, schedules=[schedule], parameters={"config_path": str(path)}, concurrency_limit=1,
            description=f"Winnow curation of {path}", tags=["winnow"],
            entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def serve(paths: list[str]) -> None:
    """Serve the configs' deployments until interrupted (Ctrl-C stops cleanly)."""
    if not os.environ.get("PREFECT_API_URL"):
        raise WinnowError("winnow serve needs a Prefect server: start one (prefect server start) and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api")
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(paths), print_starting_message=True)


def runs(limit: int = 20) -> list[dict[str, Any]]:
    """Recent flow runs of Winnow's flows on the server, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,
                                                FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterStartTime)
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(  # runs that started (not the scheduled ones to come)
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOWS))),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC, limit=limit)
        flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOWS))))}
        outputs: dict[Any, str] = {}
        keys: dict[Any, list[str]] = {}
        if found:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in found])))
            for a in arts:
                if a.key:
                    keys.setdefault(a.flow_run_id, []).append(a.key)
                if a.key == "winnow-output":
                    outputs[a.flow_run_id] = str(a.data)
    rows = []
    for r in found:
        link = outputs.get(r.id) or ""
        rows.append({
            "name": r.name, "flow": flows.get(r.flow_id, ""), "state": r.state_name or "",
            "start": r.start_time.isoformat(timespec="seconds") if r.start_time else "",
            "seconds": round(r.total_run_time.total_seconds(), 1) if r.total_run_time else None,
            "output": _link_path(link),
            "artifacts": sorted(keys.get(r.id, [])),
        })
    return rows


def _link_path(data: str) -> str:
    """The directory a `winnow-output` link artifact names (its data is `[text](file:///...)`)."""
    from urllib.parse import unquote, urlparse

    start = data.find("(file://")
    if start < 0:
        return ""
    uri = data[start + 1:data.rfind(")")]
    return unquote(urlparse(uri).path)
