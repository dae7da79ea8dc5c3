"""`<output>/report.html`: the run report as one page that opens without a server.

Every figure is drawn here with matplotlib (Agg) from the records' stats and embedded as a
base64 PNG, so the file needs nothing beside it; each has a one-line caption saying what to read
from it. Sections: the stage table, the document funnel, removals per stage and reason, score
histograms with the selection's cut, near-duplicate component sizes, tokens per length bucket
and per domain, the mixture schedule, validation (when `[validate]` ran) and the resume
decisions. A section is written only when the run has its data, so none is empty. A small script
in the page records what a browser made of it (`data-images`, `data-broken`, `data-empty` on
`<body>`), which `tests/test_resume.py` reads from headless Chromium.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from .report import ACCOUNTING, STAGE_HEADER, STYLE_HEADER, StageRecord, stage_table_rows, style_table_rows

_CHECK = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const empty = Array.from(document.querySelectorAll("section"))
    .filter(s => s.querySelectorAll("img, table, p.body").length === 0).map(s => s.id);
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.broken = JSON.stringify(broken);
  document.body.dataset.empty = JSON.stringify(empty);
});
</script>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
td.n { text-align: right; } figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; } code { background: #f4f4f4; }
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{src}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if isinstance(c, (int, float)) or str(c).replace(",", "").replace(".", "").isdigit() else ""}">'
                         f"{html.escape(f'{c:,}' if isinstance(c, int) else str(c))}</td>" for c in row) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{body}</section>'


def _funnel(records: list[StageRecord]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(records) + 1.2))
    names = [r.name for r in records]
    ax.barh(names, [r.kept for r in records], color="#4c72b0", label="kept")
    ax.barh(names, [r.removed for r in records], left=[r.kept for r in records], color="#dd8452", label="removed")
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.legend(loc="lower right")
    for i, r in enumerate(records):
        tokens = r.stats.get("tokens")
        note = f"{r.kept:,}" + (f"  ({tokens:,} tokens)" if isinstance(tokens, int) else "")
        ax.text(r.kept, i, " " + note, va="center", fontsize=8)
    return _figure(_png(fig), "document funnel",
                   "Documents each stage received, split into kept (blue) and removed (orange): the orange part "
                   "of a bar is that stage's whole cut, and the next bar starts from its blue part.")


def _removals(records: list[StageRecord]) -> str:
    rows = [(r.name, kind, n) for r in records for kind, n in (r.stats.get("removed_by_reason") or {}).items()]
    if not rows:
        return ""
    plt = _plt()
    rows = rows[:40]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    labels = [f"{stage}: {kind}"[:60] for stage, kind, _ in rows]
    ax.barh(labels, [n for _, _, n in rows], color="#c44e52")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("removed documents (log scale)")
    table = _table(["stage", "reason", "removed"], [[s, k, n] for s, k, n in rows])
    return _figure(_png(fig), "removals per stage and reason",
                   "Removed documents per stage and kind of reason, on a log scale: a long bar is the rule or "
                   "check that shaped the corpus most; rows of removed/<stage>/ say why for each document.") + table


def _select_cuts(records: list[StageRecord]) -> dict[str, tuple[list[float], str]]:
    """Per score column a select stage cut on: (the cut lines to draw, what they mean in words)."""
    out: dict[str, tuple[list[float], str]] = {}
    for r in records:
        st = r.stats
        col = st.get("score") if r.stage == "select" else None
        if not col:
            continue
        if isinstance(st.get("threshold"), (int, float)):
            side = "at or below" if st.get("order") == "low" else "at or above"
            out[col] = ([st["threshold"]], f"the dashed line is the cut select kept {side} ({st['threshold']:.4g})")
        elif isinstance(st.get("lower_edge"), (int, float)) or isinstance(st.get("upper_edge"), (int, float)):
            edges = [e for e in (st.get("lower_edge"), st.get("upper_edge")) if isinstance(e, (int, float))]
            out[col] = (edges, "the dashed lines are the edges of the band select kept ("
                        + " to ".join(f"{e:.4g}" for e in edges) + ")")
        elif isinstance(st.get("groups"), dict):
            by = st.get("by", "group")
            out[col] = ([], f"select cut each {by} apart (its cuts: report.md's per-{by} table)")
    return out


def _histograms(records: list[StageRecord]) -> str:
    cuts = _select_cuts(records)
    parts = []
    plt = _plt()
    for r in records:
        for col, hist in (r.stats.get("score_histograms") or {}).items():
            edges, counts = hist["edges"], hist["counts"]
            fig, ax = plt.subplots(figsize=(7, 3.2))
            if counts:
                ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
                       color="#4c72b0", edgecolor="white")
            lines, said = cuts.get(col, ([], "no select stage cut on it"))
            for k, cut in enumerate(lines):
                ax.axvline(cut, color="#c44e52", linestyle="--", label="selection cut" if k == 0 else None)
            if lines:
                ax.legend()
            ax.set_xlabel(col)
            ax.set_ylabel("documents")
            caption = f"{col} of the {sum(counts):,} documents {r.name} scored; {said}."
            parts.append(_figure(_png(fig), f"{col} histogram", caption))
    return "".join(parts)


def _components(records: list[StageRecord]) -> str:
    parts = []
    plt = _plt()
    for r in records:
        sizes = r.stats.get("component_sizes")
        if not sizes:
            continue
        pairs = sorted((int(k), int(v)) for k, v in sizes.items())
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar([str(k) for k, _ in pairs], [v for _, v in pairs], color="#4c72b0")
        ax.set_yscale("log")
        ax.set_xlabel("documents in component")
        ax.set_ylabel("components (log scale)")
        parts.append(_figure(_png(fig), f"{r.name} component sizes",
                             f"{r.name}: how many near-duplicate groups have each size; each group keeps one document, "
                             "so a long tail to the right means heavily copied text."))
    return "".join(parts)


def _tokens(records: list[StageRecord]) -> str:
    parts = []
    plt = _plt()
    for r in records:
        buckets = r.stats.get("buckets")
        if isinstance(buckets, dict) and buckets:
            names = list(buckets)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar([f"2^{n}" if n != "tail" else "tail" for n in names], [buckets[n]["tokens"] for n in names],
                   color="#55a868")
            ax.set_xlabel("length bucket")
            ax.set_ylabel("tokens")
            parts.append(_figure(_png(fig), f"{r.name} tokens per bucket",
                                 f"{r.name}: tokens in each power-of-two length bucket; training draws batches per bucket, "
                                 "so a thin bucket is one the curriculum revisits often."))
        datasets = r.stats.get("datasets")
        if isinstance(datasets, dict) and any("/" in k for k in datasets):
            dirs = r.stats.get("domain_dirs") or {}
            per: dict[str, int] = {}
            for name, v in datasets.items():
                top = name.split("/")[0]
                per[dirs.get(top, top)] = per.get(dirs.get(top, top), 0) + int(v.get("tokens", 0))
            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar(list(per), list(per.values()), color="#8172b2")
            ax.set_ylabel("tokens")
            parts.append(_figure(_png(fig), f"{r.name} tokens per domain",
                                 f"{r.name}: exported tokens per domain: the budget a mixture can draw from each."))
    return "".join(parts)


def _schedules(records: list[StageRecord]) -> str:
    parts = []
    for r in records:
        if not r.stats.get("schedule"):
            continue
        from mixers.schedule import Schedule

        schedule = Schedule.from_json(r.stats["schedule"])
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = schedule.plot(Path(tmp) / "schedule.png", title=f"{r.name}: {schedule.kind} schedule")
            src = "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(_figure(src, f"{r.name} schedule",
                             "Domain weights over training: where a line rises late, that domain is upsampled in the "
                             "final part of training."))
    return "".join(parts)


def _validation(output: Path) -> str:
    path = output / "validate.json"
    if not path.is_file():
        return ""
    results = json.loads(path.read_text())
    rows = []
    for name, v in results.items():
        verdict = (v.get("comparison") or {}).get("heldout_loss", {}).get("verdict", "")
        rows.append([name, f"{v.get('heldout_loss', float('nan')):.4f}", f"{v.get('heldout_bpb', float('nan')):.4f}",
                     len(v.get("seeds_loss") or []), verdict])
    body = _table(["variant", "held-out loss", "bits per byte", "seeds", "against the first"], rows)
    plot = output / "plots" / "validate-loss.png"
    if plot.is_file():
        src = "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode("ascii")
        body = _figure(src, "validation loss curves",
                       "Training loss against tokens for every variant and seed: curves of one variant that stay "
                       "below another's at the same budget mean that mix trains better.") + body
    return body


def _resume(records: list[StageRecord]) -> str:
    if not any(r.resume for r in records):
        return ""
    return ('<p class="body">A step is skipped when its key (the inputs\' contents, its parameters and those of '
            "every step before it, its code version) matches the saved run's.</p>"
            + _table(["stage", "decision"], [[r.name, r.resume or ""] for r in records]))


def write_html(output: Path, records: list[StageRecord], manifest: dict[str, Any]) -> Path:
    """Write `<output>/report.html` (see the module docstring) and return its path."""
    output = Path(output)
    sections = [
        ("stages", "Stages", f'<p class="body">Every stage satisfies {ACCOUNTING} (documents; only rephrase adds).</p>'
         + _table(STAGE_HEADER, stage_table_rows(records))),
        ("funnel", "Documents through the stages", _funnel(records)),
        ("removals", "Removals per stage and reason", _removals(records)),
        ("scores", "Scores", _histograms(records)),
        ("near-duplicates", "Near-duplicate components", _components(records)),
        ("rephrase", "Rephrasing per style", "".join(
            f'<p class="body">{html.escape(r.name)}: requests, tokens, retries, truncation rate and wall time '
            f'per style.</p>' + _table(STYLE_HEADER, style_table_rows(r.stats["per_style"]))
            for r in records if isinstance(r.stats.get("per_style"), dict) and r.stats["per_style"])),
        ("tokens", "Tokens per length bucket and per domain", _tokens(records)),
        ("schedule", "Mixture schedule", _schedules(records)),
        ("validation", "Validation", _validation(output)),
        ("resume", "Resume decisions", _resume(records)),
    ]
    title = f"Winnow run report: {output}"
    head = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style>{_CHECK}</head><body><h1>Winnow run report</h1>")
    facts = (f'<p class="body">output <code>{html.escape(str(output))}</code>, started {manifest["started_at"]}, '
             f'finished {manifest["finished_at"]}, engine {html.escape(str(manifest.get("engine", {}).get("name")))}, '
             f'winnow {html.escape(str(manifest["code_version"].get("winnow")))}; '
             f'{manifest["counts"]["in"]:,} documents in, {manifest["counts"]["kept"]:,} kept.</p>')
    body = "".join(_section(i, t, b) for i, t, b in sections if b)
    path = output / "report.html"
    tmp = path.with_name(".tmp-report.html")
    tmp.write_text(head + facts + body + "</body></html>\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_html_from_manifest(output: Path) -> Path | None:
    """report.html again from `<output>/manifest.json` (after validation added its results)."""
    path = Path(output) / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    records = []
    for s in manifest["stages"]:
        body = dict(s)
        body["n_in"] = body.pop("in")
        records.append(StageRecord(**body))
    return write_html(Path(output), records, manifest)
