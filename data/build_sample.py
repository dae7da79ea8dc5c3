#!/usr/bin/env python3
"""Build Winnow's sample data from real text shipped in Debian packages.

Run from the repository root:

    python data/build_sample.py            # build everything under data/
    python data/build_sample.py --verify   # build, then run the self-checks

Writes (see data/README.md for details):

    data/sample/pool/code.parquet          Python stdlib source files
    data/sample/pool/docs.jsonl.gz         Debian long descriptions + Python library reference
    data/sample/pool/fiction.jsonl.zst     fortunes / quotations
    data/sample/pool/reference.jsonl.zst   FOLDOC, Jargon File, Devil's Dictionary entries
    data/sample/truth.jsonl                one line per planted record
    data/reference/hq.jsonl.zst            high-quality reference set (perlfaq, Python FAQ/howto/tutorial)
    data/eval/heldout.jsonl.zst            held-out split, disjoint from pool and hq

Deterministic: one --seed (default 1234) drives a single random.Random; all
file lists are sorted; compressors are configured without timestamps.
Dependencies: stdlib + zstandard + pyarrow (+ xxhash, used for a content digest).
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
import zstandard

# ----------------------------------------------------------------------------
# Source locations
# ----------------------------------------------------------------------------
FORTUNES_DIR = Path("/usr/share/games/fortunes")
DICTD_DIR = Path("/usr/share/dictd")
TRANSLATION_FILE = Path(
    "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4"
)
APT_HELPER = "/usr/lib/apt/apt-helper"
PYDOC_SOURCES = Path("/usr/share/doc/python3.11-doc/html/_sources")
PERL_POD_DIR = Path("/usr/share/perl/5.36.0/pod")
PERL_TUTORIAL_PODS = {
    "perlintro.pod", "perlootut.pod", "perlopentut.pod", "perlpacktut.pod", "perlreftut.pod",
    "perlrequick.pod", "perlretut.pod", "perlthrtut.pod", "perlunitut.pod", "perluniintro.pod",
    "perlunifaq.pod", "perldebtut.pod", "perlsub.pod", "perlsyn.pod", "perldata.pod",
    "perlsec.pod", "perlstyle.pod", "perltrap.pod", "perlperf.pod", "perlxstut.pod",
}

# Canonical input order of the pool files (alphabetical).
DOMAINS = ["code", "docs", "fiction", "reference"]
POOL_FILES = {
    "code": "code.parquet",
    "docs": "docs.jsonl.gz",
    "fiction": "fiction.jsonl.zst",
    "reference": "reference.jsonl.zst",
}

# Target sizes.
N_POOL = {"code": 400, "docs": 1500, "fiction": 1500, "reference": 1500}
N_HELDOUT = 150  # per domain, and from the hq reference set
N_HQ_MAX = 1800
N_EXACT, N_NEAR, N_JUNK, N_SHORT = 250, 250, 150, 80
LONG_PER_FILE = {"code": 2, "docs": 3, "fiction": 5, "reference": 5}  # 15 in all
CODE_CAP = 30_000
MIN_WORDS = 8  # natural docs shorter than this are not used (planted shorts are 1-5 words)

BOILERPLATE = [
    "Share this: Facebook | Twitter | Email",
    "Posted in Uncategorized | Leave a comment",
    "Like this: Like Loading...",
    "Click here to subscribe to our newsletter!",
    "Copyright (c) All rights reserved. | Privacy Policy | Terms of Use",
    "Related posts:",
    "Tags: news, tips, tutorial",
    "Read more >>",
    "Print | Email | Share",
    "This entry was posted on Monday. Bookmark the permalink.",
]

COOKIE_BANNERS = [
    "We use cookies to improve your experience on {site}. By continuing to browse "
    "the site you are agreeing to our use of cookies. Accept | Decline | Learn more",
    "This website ({site}) uses cookies to ensure you get the best experience on our "
    "website. Got it! Cookie Policy",
    "{site} and our partners use cookies and similar technologies to personalise "
    "content and ads, to provide social media features and to analyse our traffic. "
    "Manage preferences | Accept all cookies | Reject non-essential",
    "By clicking \"Accept All Cookies\", you agree to the storing of cookies on your "
    "device to enhance site navigation on {site}, analyze site usage, and assist in "
    "our marketing efforts. Cookie Settings | Accept All Cookies",
]

NAV_ITEMS = [
    "Home", "About", "About Us", "Contact", "Contact Us", "Blog", "News", "Services",
    "Products", "Shop", "Cart", "Login", "Sign up", "Register", "FAQ", "Help",
    "Support", "Careers", "Privacy Policy", "Terms", "Sitemap", "Search", "Archive",
    "Categories", "Tags", "Events", "Gallery", "Downloads", "Forum", "Press",
]


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def shingles(text: str, n: int = 5) -> set:
    w = norm(text).split()
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def doc(text: str, **meta: str) -> dict:
    return {"text": text, "meta": {k: str(v) for k, v in sorted(meta.items())}}


_RST_UNDERLINE = re.compile(r"^([=\-~^*\"'#+`:.])\1{2,}\s*$")


def rst_sections(text: str):
    """Split reStructuredText into (title, body) at every heading level."""
    lines = text.splitlines()
    heads = []  # (title_line_index, first_body_line_index)
    i = 0
    while i < len(lines) - 1:
        title, under = lines[i], lines[i + 1]
        if (
            title.strip()
            and not title[0].isspace()
            and _RST_UNDERLINE.match(under)
            and len(under.rstrip()) >= len(title.rstrip())
        ):
            start = i
            if i > 0 and _RST_UNDERLINE.match(lines[i - 1]):
                start = i - 1  # overline
            heads.append((start, i, i + 2))
            i += 2
            continue
        i += 1
    out = []
    for k, (start, ti, body_start) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        body = "\n".join(lines[body_start:end]).strip()
        out.append((lines[ti].strip(), body))
    return out


_POD_CODE2 = re.compile(r"[A-Z]<<+\s+(.*?)\s+>>+", re.S)
_POD_CODE1 = re.compile(r"[A-Z]<([^<>]*)>")


def pod_clean(text: str) -> str:
    text = _POD_CODE2.sub(r"\1", text)
    for _ in range(3):
        text = _POD_CODE1.sub(r"\1", text)
    text = re.sub(r"^=(over|back|item|begin|end|for)\b.*$", "", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ----------------------------------------------------------------------------
# Source readers (each returns a list of docs in a deterministic order)
# ----------------------------------------------------------------------------
def read_fortunes() -> list:
    out = []
    for p in sorted(FORTUNES_DIR.iterdir()):
        if not p.is_file() or p.suffix in (".dat", ".u8") or p.name.endswith(".dat"):
            continue
        raw = p.read_text(encoding="utf-8", errors="replace")
        for rec in re.split(r"^%\s*$", raw, flags=re.M):
            t = rec.strip("\n").rstrip()
            if t.strip():
                out.append(doc(t, origin=f"fortunes:{p.name}"))
    return out


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def read_dictd(name: str, package: str) -> list:
    data = gzip.open(DICTD_DIR / f"{name}.dict.dz").read()
    seen, out = set(), []
    for line in (DICTD_DIR / f"{name}.index").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database") or parts[0].startswith("00-database"):
            continue
        off, ln = _b64(parts[1]), _b64(parts[2])
        if (off, ln) in seen:
            continue
        seen.add((off, ln))
        t = data[off : off + ln].decode("utf-8", errors="replace").strip()
        if t:
            out.append(doc(t, origin=f"{package}:{name}", headword=parts[0]))
    return out


def read_debian_descriptions() -> list:
    raw = subprocess.run(
        [APT_HELPER, "cat-file", str(TRANSLATION_FILE)], check=True, capture_output=True
    ).stdout.decode("utf-8", errors="replace")
    out = []
    for stanza in raw.split("\n\n"):
        pkg, desc_lines, in_desc = None, [], False
        for line in stanza.split("\n"):
            if line.startswith("Package:"):
                pkg = line.split(":", 1)[1].strip()
                in_desc = False
            elif line.startswith("Description-en:"):
                desc_lines = [line.split(":", 1)[1].strip()]
                in_desc = True
            elif in_desc and line.startswith(" "):
                body = line[1:]
                desc_lines.append("" if body.strip() == "." else body)
            else:
                in_desc = False
        if not pkg or len(desc_lines) < 2:
            continue
        short, body = desc_lines[0], "\n".join(desc_lines[1:]).strip()
        text = f"{pkg}: {short}\n\n{body}"
        out.append(doc(text, origin="debian:bookworm/main/Translation-en", package=pkg, title=short))
    return out


def read_rst_dir(sub: str, min_body: int = 200) -> list:
    out = []
    for p in sorted((PYDOC_SOURCES / sub).rglob("*.rst.txt")):
        rel = p.relative_to(PYDOC_SOURCES).as_posix()
        for title, body in rst_sections(p.read_text(encoding="utf-8", errors="replace")):
            if len(body) >= min_body:
                out.append((rel, title, body))
    return out


def read_pydoc_library() -> list:
    return [
        doc(f"{title}\n\n{body}", origin=f"python3.11-doc:{rel}", title=title)
        for rel, title, body in read_rst_dir("library")
    ]


def read_hq() -> list:
    out = []
    # perlfaq question/answer pairs
    for p in sorted(PERL_POD_DIR.glob("perlfaq[0-9].pod")):
        raw = p.read_text(encoding="utf-8", errors="replace")
        chunks = re.split(r"^(=head[12] .*)$", raw, flags=re.M)
        for k in range(1, len(chunks) - 1, 2):
            if not chunks[k].startswith("=head2"):
                continue
            q = pod_clean(chunks[k][len("=head2 "):])
            a = pod_clean(chunks[k + 1])
            if len(a) >= 100:
                out.append(doc(f"Question: {q}\n\nAnswer: {a}", origin=f"perl-doc:{p.name}", title=q))
    # perl-doc tutorials / core docs, split into =head1/=head2 sections (perlunifaq is Q/A)
    skip_titles = {"NAME", "AUTHOR", "AUTHORS", "SEE ALSO", "COPYRIGHT", "LICENSE",
                   "COPYRIGHT AND LICENCE", "COPYRIGHT AND LICENSE", "AUTHOR AND COPYRIGHT",
                   "AUTHORS AND COPYRIGHT", "VERSION", "CREDITS", "ACKNOWLEDGEMENTS", "HISTORY",
                   "BUGS", "SYNOPSIS", "CHANGES", "REVISION"}
    for p in sorted(PERL_POD_DIR.glob("*.pod")):
        if p.name not in PERL_TUTORIAL_PODS:
            continue
        raw = p.read_text(encoding="utf-8", errors="replace")
        chunks = re.split(r"^(=head[1234] .*)$", raw, flags=re.M)
        for k in range(1, len(chunks) - 1, 2):
            title = pod_clean(chunks[k].split(" ", 1)[1])
            body = pod_clean(chunks[k + 1])
            if title.upper() in skip_titles or len(body) < 300:
                continue
            if p.name == "perlunifaq.pod" and title.endswith("?"):
                text = f"Question: {title}\n\nAnswer: {body}"
            else:
                text = f"{title}\n\n{body}"
            out.append(doc(text, origin=f"perl-doc:{p.name}", title=title))
    # Python FAQ question/answer pairs
    for rel, title, body in read_rst_dir("faq", min_body=50):
        if title.endswith("?"):
            out.append(doc(f"Question: {title}\n\nAnswer: {body}", origin=f"python3.11-doc:{rel}", title=title))
    # Python howto + tutorial sections
    for sub in ("howto", "tutorial"):
        for rel, title, body in read_rst_dir(sub, min_body=300):
            out.append(doc(f"{title}\n\n{body}", origin=f"python3.11-doc:{rel}", title=title))
    return out


def read_stdlib() -> list:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "__pycache__", "dist-packages"}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            t = p.read_text(encoding="utf-8", errors="replace")
            if len(t) > CODE_CAP:
                t = t[:CODE_CAP]
                t = t[: t.rfind("\n") + 1]
            t = t.rstrip() + "\n"
            if len(t.strip()) >= 200:
                out.append(doc(t, origin=f"python3.11-stdlib:{rel}", path=rel))
    out.sort(key=lambda d: d["meta"]["path"])
    return out


# ----------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------
def jsonl_bytes(records, keys=("id", "text", "meta")) -> bytes:
    lines = [json.dumps({k: r[k] for k in keys}, ensure_ascii=False) for r in records]
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_zst(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(data))


def write_gz(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    path.write_bytes(buf.getvalue())


def write_parquet(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in records], pa.string()),
            "text": pa.array([r["text"] for r in records], pa.string()),
            "meta": pa.array(
                [sorted(r["meta"].items()) for r in records], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    pq.write_table(table, path, compression="zstd", compression_level=19, row_group_size=1_000_000)


def read_pool(root: Path) -> dict:
    """Read the pool back in canonical order: {domain: [record, ...]}."""
    out = {}
    for d in DOMAINS:
        p = root / "sample" / "pool" / POOL_FILES[d]
        if p.suffix == ".parquet":
            t = pq.read_table(p).to_pylist()
            out[d] = [{"id": r["id"], "text": r["text"], "meta": dict(r["meta"])} for r in t]
        else:
            raw = p.read_bytes()
            raw = gzip.decompress(raw) if p.suffix == ".gz" else zstandard.ZstdDecompressor().decompress(raw)
            out[d] = [json.loads(l) for l in raw.decode("utf-8").splitlines() if l]
    return out


# ----------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------
def build(root: Path, seed: int):
    rng = random.Random(seed)

    # 1. Collect every candidate, canonical order, and drop natural exact duplicates
    #    globally (so pool, hq and heldout are disjoint and the pool's only exact
    #    duplicates are planted ones).
    sources = {
        "code": {"stdlib": read_stdlib()},
        "docs": {"debian": read_debian_descriptions(), "pylib": read_pydoc_library()},
        "fiction": {"fortunes": read_fortunes()},
        "reference": {
            "foldoc": read_dictd("foldoc", "dict-foldoc"),
            "jargon": read_dictd("jargon", "dict-jargon"),
            "devil": read_dictd("devil", "dict-devil"),
        },
        "hq": {"hq": read_hq()},
    }
    seen = set()
    for dom in [*DOMAINS, "hq"]:
        for name, docs in sources[dom].items():
            kept = []
            for d in docs:
                n = norm(d["text"])
                if not n or n in seen:
                    continue
                seen.add(n)
                if dom != "hq" and len(n.split()) < MIN_WORDS:
                    continue
                kept.append(d)
            sources[dom][name] = kept

    # 2. Hold out, then sample the pool / hq.
    quotas = {
        "code": {"stdlib": (150, 400)},
        "docs": {"debian": (100, 1000), "pylib": (50, 500)},
        "fiction": {"fortunes": (150, 1500)},
        "reference": {"foldoc": (90, 900), "jargon": (35, 350), "devil": (25, 250)},
        "hq": {"hq": (150, N_HQ_MAX)},
    }
    heldout, base, spare = [], {}, {}
    for dom in [*DOMAINS, "hq"]:
        chosen, spare[dom] = [], []
        for name, (n_held, n_pool) in quotas[dom].items():
            docs = list(sources[dom][name])
            rng.shuffle(docs)
            for d in docs[:n_held]:
                heldout.append(dict(d, domain=dom))
            chosen.extend(docs[n_held : n_held + n_pool])
            spare[dom].extend(docs[n_held + n_pool :])  # unused: only for long docs
        rng.shuffle(chosen)
        base[dom] = chosen
    hq = base.pop("hq")

    # Every pool-domain base doc gets a stable handle (domain, index).
    all_norms = {norm(d["text"]) for dom in DOMAINS for d in base[dom]}
    vocab = sorted(
        {
            w.lower()
            for dom in ("fiction", "reference")
            for d in base[dom]
            for w in re.findall(r"[A-Za-z]{3,12}", d["text"])
        }
    )

    planted = []  # dicts: text, meta, kind, file, of=(dom, idx) | None, jaccard, after=(idx) | None

    def claim(text: str) -> bool:
        n = norm(text)
        if not n or n in all_norms:
            return False
        all_norms.add(n)
        return True

    def pick_target(orig_dom: str) -> str:
        if rng.random() < 0.7:
            return orig_dom
        return rng.choice(DOMAINS[DOMAINS.index(orig_dom):])

    handles = [(dom, i) for dom in DOMAINS for i in range(len(base[dom]))]

    # 2a. exact duplicates
    variants = [
        lambda t: t,
        lambda t: t + "\n",
        lambda t: t + "  \n\n",
        lambda t: "\n" + t,
        lambda t: t.replace(" ", "   ", 1),
        lambda t: re.sub(r"\n", "\n\n", t, count=1),
        lambda t: "  " + t.rstrip() + " ",
    ]
    for _ in range(N_EXACT):
        dom, i = rng.choice(handles)
        src = base[dom][i]
        text = rng.choice(variants)(src["text"])
        assert norm(text) == norm(src["text"])
        tgt = pick_target(dom)
        planted.append(dict(text=text, meta=dict(src["meta"]), kind="exact_dup", file=tgt,
                            of=(dom, i), jaccard=None))

    # 2b. near duplicates
    def perturb(text: str) -> str:
        toks = re.split(r"(\s+)", text)
        word_pos = [k for k, t in enumerate(toks) if t and not t.isspace()]
        n_edit = max(1, round(len(word_pos) * rng.uniform(0.02, 0.05)))
        for k in rng.sample(word_pos, min(n_edit, len(word_pos))):
            op = rng.choice(("sub", "del", "ins"))
            if op == "sub":
                toks[k] = rng.choice(vocab)
            elif op == "del":
                toks[k] = ""
            else:
                toks[k] = toks[k] + " " + rng.choice(vocab)
        out = "".join(toks)
        r = rng.random()
        if r < 0.3:
            out = out.rstrip() + "\n\n" + rng.choice(BOILERPLATE) + "\n"
        elif r < 0.45:
            out = rng.choice(BOILERPLATE) + "\n\n" + out
        return out

    near_handles = [h for h in handles if len(base[h[0]][h[1]]["text"].split()) >= 60]
    made = 0
    while made < N_NEAR:
        dom, i = rng.choice(near_handles)
        src = base[dom][i]
        for _attempt in range(20):
            text = perturb(src["text"])
            if norm(text) == norm(src["text"]):
                continue
            j = jaccard(text, src["text"])
            if j >= 0.7 and claim(text):
                planted.append(dict(text=text, meta=dict(src["meta"]), kind="near_dup",
                                    file=pick_target(dom), of=(dom, i), jaccard=round(j, 4)))
                made += 1
                break

    # 2c. junk
    def words(k):
        return [rng.choice(vocab) for _ in range(k)]

    def site():
        return "www." + "".join(words(2)) + rng.choice([".com", ".net", ".org", ".info"])

    def junk_text(kind: str) -> str:
        if kind == "nav":
            items = rng.sample(NAV_ITEMS, rng.randint(5, 12)) + [w.capitalize() for w in words(rng.randint(1, 4))]
            rng.shuffle(items)
            line = " | ".join(items)
            rows = [line]
            for _ in range(rng.randint(0, 3)):
                rows.append(" | ".join(rng.sample(items, max(3, len(items) // 2))))
            return "\n".join(rows)
        if kind == "links":
            s = site()
            rows = []
            for _ in range(rng.randint(8, 40)):
                path = "/".join(words(rng.randint(1, 3)))
                u = f"https://{s}/{path}" + rng.choice(["", ".html", "/", ".php?id=%d" % rng.randint(1, 9999)])
                rows.append(rng.choice([u, f"* {' '.join(words(rng.randint(1, 4))).title()} - {u}", f"[{rng.choice(vocab)}]({u})"]))
            return "\n".join(rows)
        if kind == "repeat":
            dom, i = rng.choice(handles)
            lines = [l.strip() for l in base[dom][i]["text"].splitlines() if len(l.split()) >= 3]
            line = rng.choice(lines) if lines else " ".join(words(6))
            return "\n".join([line] * rng.randint(20, 120))
        if kind == "cookie":
            t = rng.choice(COOKIE_BANNERS).format(site=site())
            return t + "\n" + " | ".join(rng.sample(NAV_ITEMS, 4))
        # keyword spam
        kw = words(rng.randint(3, 8))
        n = rng.randint(60, 400)
        style = rng.random()
        if style < 0.33:
            return ", ".join(rng.choice(kw) for _ in range(n))
        if style < 0.66:
            return " ".join(f"{rng.choice(['best', 'cheap', 'buy', 'free', 'top', 'online'])} {rng.choice(kw)}" for _ in range(n // 2))
        return " ".join(rng.choice(kw + words(5)) for _ in range(n))

    made = 0
    kinds = ["nav", "links", "repeat", "cookie", "spam"]
    while made < N_JUNK:
        text = junk_text(kinds[made % len(kinds)])
        if claim(text):
            planted.append(dict(text=text, meta={"origin": "synthetic"}, kind="junk",
                                file=rng.choice(DOMAINS), of=None, jaccard=None))
            made += 1

    # 2d. very short docs
    made = 0
    while made < N_SHORT:
        dom, i = rng.choice(handles)
        w = base[dom][i]["text"].split()
        k = rng.randint(1, 5)
        s = rng.randrange(0, max(1, len(w) - k))
        text = " ".join(w[s : s + k])
        if claim(text):
            planted.append(dict(text=text, meta=dict(base[dom][i]["meta"]), kind="short",
                                file=rng.choice(DOMAINS), of=None, jaccard=None))
            made += 1

    # 2e. very long docs: concatenations of many real docs from the same domain
    #     (pool docs in random order; if the domain's pool is too small, continue
    #     with unused source docs of that domain, never heldout/hq ones)
    for dom in DOMAINS:
        made = 0
        while made < LONG_PER_FILE[dom]:
            target = rng.randint(200_000, 400_000)
            parts, total = [], 0
            order = [d["text"] for d in base[dom]]
            rng.shuffle(order)
            extra = [d["text"] for d in spare[dom]]
            rng.shuffle(extra)
            for t in order + extra:
                if total >= target:
                    break
                parts.append(t.strip())
                total += len(parts[-1]) + 2
            text = "\n\n".join(parts)
            if len(text) > 400_000:
                text = text[:400_000]
                text = text[: text.rfind("\n") + 1].rstrip()
            assert 200_000 <= len(text) <= 400_000, len(text)
            if claim(text):
                planted.append(dict(text=text, meta={"origin": f"concatenation:{dom}", "parts": str(len(parts))},
                                    kind="long", file=dom, of=None, jaccard=None))
                made += 1

    # 3. Place planted records: keys are floats; base doc i has key i. Copies of a
    #    doc in the same file go strictly after it; other files come later in the
    #    canonical order (pick_target never chooses an earlier file).
    placed = {dom: [(float(i), 0, ("base", i)) for i in range(len(base[dom]))] for dom in DOMAINS}
    for k, p in enumerate(planted):
        n = len(base[p["file"]])
        if p["of"] is not None and p["of"][0] == p["file"]:
            lo = p["of"][1] + 0.5
        else:
            lo = -0.5
        key = rng.uniform(lo, n - 0.5)
        placed[p["file"]].append((key, k + 1, ("planted", k)))

    ids = {}  # (dom, base_idx) -> id
    pool = {}
    for dom in DOMAINS:
        recs = []
        for pos, (_key, _tb, (what, k)) in enumerate(sorted(placed[dom])):
            rid = f"{dom}-{pos:06d}"
            if what == "base":
                d = base[dom][k]
                ids[(dom, k)] = rid
                recs.append({"id": rid, "text": d["text"], "meta": d["meta"]})
            else:
                p = planted[k]
                p["id"] = rid
                recs.append({"id": rid, "text": p["text"], "meta": dict(sorted(p["meta"].items()))})
        pool[dom] = recs

    truth = []
    planted_sorted = sorted(planted, key=lambda p: (DOMAINS.index(p["file"]), p["id"]))
    for p in planted_sorted:
        truth.append({
            "id": p["id"], "kind": p["kind"], "of": ids[p["of"]] if p["of"] else None,
            "domain_file": p["file"], "jaccard": p["jaccard"],
        })

    # 4. Write.
    sample = root / "sample"
    write_parquet(sample / "pool" / POOL_FILES["code"], pool["code"])
    write_gz(sample / "pool" / POOL_FILES["docs"], jsonl_bytes(pool["docs"]))
    write_zst(sample / "pool" / POOL_FILES["fiction"], jsonl_bytes(pool["fiction"]))
    write_zst(sample / "pool" / POOL_FILES["reference"], jsonl_bytes(pool["reference"]))
    (sample / "truth.jsonl").write_text(
        "".join(json.dumps(t) + "\n" for t in truth), encoding="utf-8"
    )
    hq_recs = [{"id": f"hq-{i:06d}", "text": d["text"], "meta": d["meta"]} for i, d in enumerate(hq)]
    write_zst(root / "reference" / "hq.jsonl.zst", jsonl_bytes(hq_recs))
    ho = [
        {"id": f"heldout-{d['domain']}-{i:06d}", "text": d["text"], "meta": d["meta"], "domain": d["domain"]}
        for i, d in enumerate(heldout)
    ]
    write_zst(root / "eval" / "heldout.jsonl.zst", jsonl_bytes(ho, keys=("id", "text", "meta", "domain")))

    # Summary
    counts = {f"sample/pool/{POOL_FILES[d]}": len(pool[d]) for d in DOMAINS}
    counts["sample/truth.jsonl"] = len(truth)
    counts["reference/hq.jsonl.zst"] = len(hq_recs)
    counts["eval/heldout.jsonl.zst"] = len(ho)
    kinds_count = {}
    for t in truth:
        kinds_count[t["kind"]] = kinds_count.get(t["kind"], 0) + 1
    ho_count = {}
    for d in ho:
        ho_count[d["domain"]] = ho_count.get(d["domain"], 0) + 1
    print("records:", json.dumps(counts, indent=1))
    print("planted by kind:", json.dumps(kinds_count, sort_keys=True))
    print("planted by file:", json.dumps({d: sum(t["domain_file"] == d for t in truth) for d in DOMAINS}))
    print("heldout by domain:", json.dumps(ho_count, sort_keys=True))
    digest = xxhash.xxh64()
    for d in DOMAINS:
        for r in pool[d]:
            digest.update(r["id"].encode() + b"\0" + r["text"].encode("utf-8") + b"\0")
    print("pool content xxh64:", digest.hexdigest())


# ----------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------
def verify(root: Path) -> bool:
    ok = True
    pool = read_pool(root)
    truth = [json.loads(l) for l in (root / "sample" / "truth.jsonl").read_text().splitlines()]
    tmap = {t["id"]: t for t in truth}
    order = [r for d in DOMAINS for r in pool[d]]
    pos = {r["id"]: k for k, r in enumerate(order)}
    ids = [r["id"] for r in order]
    if len(ids) != len(set(ids)):
        print("FAIL: duplicate ids in pool"); ok = False
    else:
        print(f"ok: {len(ids)} pool ids, all unique")
    seen, dup_ids = {}, set()
    for r in order:
        n = norm(r["text"])
        if not n:
            print("FAIL: empty text", r["id"]); ok = False
        if n in seen:
            dup_ids.add(r["id"])
        else:
            seen[n] = r["id"]
    exact = {t["id"] for t in truth if t["kind"] == "exact_dup"}
    if dup_ids == exact:
        print(f"ok: normalized-exact-duplicate ids == truth exact_dup ids ({len(exact)})")
    else:
        print(f"FAIL: dup ids {len(dup_ids)} vs truth exact {len(exact)}; "
              f"extra={sorted(dup_ids - exact)[:5]} missing={sorted(exact - dup_ids)[:5]}")
        ok = False
    byid = {r["id"]: r for r in order}
    for t in truth:
        if t["id"] not in byid:
            print("FAIL: truth id not in pool", t["id"]); ok = False; continue
        if t["kind"] in ("exact_dup", "near_dup"):
            o = t["of"]
            if o not in byid or o in tmap or pos[o] >= pos[t["id"]]:
                print("FAIL: bad original", t); ok = False; continue
            a, b = norm(byid[t["id"]]["text"]), norm(byid[o]["text"])
            if t["kind"] == "exact_dup" and a != b:
                print("FAIL: exact dup differs", t); ok = False
            if t["kind"] == "near_dup":
                j = jaccard(byid[t["id"]]["text"], byid[o]["text"])
                if a == b or j < 0.7 or abs(j - t["jaccard"]) > 1e-3:
                    print("FAIL: near dup", t, j); ok = False
        if t["kind"] == "short" and not 1 <= len(byid[t["id"]]["text"].split()) <= 5:
            print("FAIL: short", t); ok = False
        if t["kind"] == "long" and not 200_000 <= len(byid[t["id"]]["text"]) <= 400_000:
            print("FAIL: long", t); ok = False
    print("ok: truth records consistent" if ok else "FAIL: see above")
    # disjointness of pool / hq / heldout
    def zst_jsonl(p):
        return [json.loads(l) for l in zstandard.ZstdDecompressor().decompress(p.read_bytes()).decode().splitlines() if l]
    hq = zst_jsonl(root / "reference" / "hq.jsonl.zst")
    ho = zst_jsonl(root / "eval" / "heldout.jsonl.zst")
    pn = set(seen)
    hn = {norm(r["text"]) for r in hq}
    on = {norm(r["text"]) for r in ho}
    inter = (len(pn & hn), len(pn & on), len(hn & on))
    if inter == (0, 0, 0):
        print(f"ok: pool ({len(pn)} distinct) / hq ({len(hq)}) / heldout ({len(ho)}) are disjoint")
    else:
        print("FAIL: overlaps pool&hq, pool&heldout, hq&heldout =", inter); ok = False
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent), help="data directory (default: data/)")
    ap.add_argument("--verify", action="store_true", help="run self-checks after building")
    ap.add_argument("--verify-only", action="store_true", help="only run the self-checks")
    a = ap.parse_args()
    root = Path(a.out)
    if not a.verify_only:
        build(root, a.seed)
    if a.verify or a.verify_only:
        sys.exit(0 if verify(root) else 1)


if __name__ == "__main__":
    main()
