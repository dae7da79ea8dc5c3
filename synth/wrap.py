"""WRAP rephrasing (Maini et al. 2024, arXiv:2401.16380; METHODS §5): the prompts, the chunker,
the clean-up of the model's answers and the sampling settings.

- **Prompts.** The paper's four styles as presets, each with a version that goes into the cache
  key and into every synthetic document's meta: ``easy``, ``medium`` (Wikipedia-like), ``hard``
  and ``qa``. Each is the Vicuna-style system preamble plus an instruction that ends in a colon,
  with the chunk after it (the paper's wording, from its prompt appendix). A config may add its
  own styles as templates (`Prompt.from_template`).
- **Chunks.** WRAP rephrases about 300 tokens at a time: longer spans lost content. A document is
  cut at line breaks, then into sentences with pysbd (rule-based, nothing to download; the paper
  used NLTK, whose punkt model is a download), and sentences are packed greedily up to the limit.
  A sentence over the limit is cut at spaces, and a word over it at characters: nothing is ever
  dropped, and the chunks joined give the document back exactly (`chunk_text`).
- **Tokens** are counted with the model's tokenizer when there is one (a tokenizer.json or a
  model directory), else estimated as one token per 4 characters, the usual rule of thumb for
  English with BPE vocabularies (OpenAI's tokenizer guide); the estimate only sizes chunks and
  dry-run figures.
- **Clean-up.** Leading boilerplate such as "Sure! Here is a paraphrase of the paragraph:" and
  trailing offers ("I hope this helps") are stripped by rules (`strip_boilerplate`); the paper
  reports under 0.1% errors left after such rules.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

from core.errors import ConfigError

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the questions.")

CHUNK_PLACEHOLDER = "{chunk}"


@dataclass(frozen=True)
class Prompt:
    """One rephrasing style: a system message and a user message with the chunk in it."""

    style: str
    version: str
    system: str
    user: str  # contains {chunk} once; a preset's chunk follows its instruction's colon

    def messages(self, chunk: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": self.user.replace(CHUNK_PLACEHOLDER, chunk)}]

    @property
    def digest(self) -> str:
        """A hash of the prompt's text: an edited template never reuses cached answers."""
        return hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()[:16]

    @classmethod
    def from_template(cls, style: str, table: Mapping[str, str]) -> "Prompt":
        """A user style from a config table: ``user`` (required; ``{chunk}`` marks where the chunk
        goes, else it is appended after a newline), ``system`` (default: WRAP's preamble) and
        ``version`` (default ``<style>-1``)."""
        unknown = set(table) - {"user", "system", "version"}
        if unknown:
            raise ConfigError(f"rephrase.templates.{style}: unknown key {sorted(unknown)[0]!r} "
                              "(known: user, system, version)")
        user = table.get("user")
        if not isinstance(user, str) or not user.strip():
            raise ConfigError(f"rephrase.templates.{style}: needs `user`, the instruction text")
        if user.count(CHUNK_PLACEHOLDER) > 1:
            raise ConfigError(f"rephrase.templates.{style}.user: {{chunk}} may appear once")
        if CHUNK_PLACEHOLDER not in user:
            user = user.rstrip() + "\n" + CHUNK_PLACEHOLDER
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", style):
            raise ConfigError(f"rephrase.templates: style name {style!r} must be 1-40 letters, digits, '_', '.', '-'")
        return cls(style, str(table.get("version") or f"{style}-1"), str(table.get("system", SYSTEM)), user)


def _preset(style: str, instruction: str) -> Prompt:
    return Prompt(style, f"wrap-{style}-1", SYSTEM, instruction + "\n" + CHUNK_PLACEHOLDER)


# The paper's prompts (Maini et al. 2024, appendix; METHODS §5), word for word.
PRESETS: dict[str, Prompt] = {
    "easy": _preset("easy", "For the following paragraph give me a paraphrase of the same using a very small "
                    "vocabulary and extremely simple sentences that a toddler will understand:"),
    "medium": _preset("medium", "For the following paragraph give me a diverse paraphrase of the same in high "
                      "quality English language as in sentences on Wikipedia:"),
    "hard": _preset("hard", "For the following paragraph give me a paraphrase of the same using very terse and "
                    "abstruse language that only an erudite scholar will understand. Replace simple words "
                    "and phrases with rare and complex ones:"),
    "qa": _preset("qa", 'Convert the following paragraph into a conversational format with multiple tags of '
                  '"Question:" followed by "Answer:":'),
}


def prompts_for(styles: tuple[str, ...], templates: Mapping[str, Mapping[str, str]] | None = None) -> list[Prompt]:
    """The prompts of `styles`: a config template of that name, else a preset."""
    templates = templates or {}
    out = []
    for style in styles:
        if style in templates:
            out.append(Prompt.from_template(style, templates[style]))
        elif style in PRESETS:
            out.append(PRESETS[style])
        else:
            known = ", ".join(sorted({*PRESETS, *templates}))
            raise ConfigError(f"rephrase: unknown style {style!r} (known: {known}; add others under templates)")
    if len({p.style for p in out}) != len(out):
        raise ConfigError("rephrase: a style is listed twice")
    return out


@dataclass(frozen=True)
class Sampling:
    """Generation settings sent with every request and recorded with every output.

    Defaults: WRAP does not publish its sampling settings (METHODS §5 marks them unverified);
    temperature 0.8 and top-p 0.95 are a published re-implementation's (vLLM). max_tokens 1024
    leaves the ~300-token chunk room to grow (Q/A rewrites run longer than their input)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.temperature <= 5.0):
            raise ConfigError(f"rephrase.temperature: {self.temperature} is outside [0, 5]")
        if not (0.0 < self.top_p <= 1.0):
            raise ConfigError(f"rephrase.top_p: {self.top_p} is outside (0, 1]")
        if self.max_tokens < 1:
            raise ConfigError("rephrase.max_tokens: must be >= 1")

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def cache_key(model: str, sampling: Sampling, prompt: Prompt, chunk: str) -> str:
    """The cache key of one request: (model, sampling settings, prompt version and text, style,
    the chunk's hash). Nothing about the input's order or the run is in it."""
    chunk_hash = hashlib.sha256(chunk.encode("utf-8", "surrogatepass")).hexdigest()
    body = json.dumps({"model": model, "sampling": asdict(sampling), "style": prompt.style,
                       "prompt": prompt.version, "prompt_text": prompt.digest, "chunk": chunk_hash},
                      sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


# ---- counting tokens --------------------------------------------------------------------------

CHARS_PER_TOKEN = 4  # the estimate without a tokenizer (OpenAI's rule of thumb for English)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@lru_cache(maxsize=4)
def token_counter(tokenizer: str | None) -> Callable[[str], int]:
    """Tokens in a text: with `tokenizer` (a tokenizer.json file, or a directory that holds one,
    as every `transformers` model directory with a fast tokenizer does), its count without
    special tokens; without one, `estimate_tokens`."""
    if not tokenizer:
        return estimate_tokens
    from tokenizers import Tokenizer

    path = Path(tokenizer)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"rephrase.tokenizer: no tokenizer.json at {tokenizer}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's
        raise ConfigError(f"rephrase.tokenizer: {path} is not a tokenizers file ({exc})") from None
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


# ---- chunking ---------------------------------------------------------------------------------

_LINES = re.compile(r"[^\n]*\n|[^\n]+")
_WORDS = re.compile(r"\s*\S+\s*|\s+")
PYSBD_MAX_CHARS = 20_000  # a line longer than this is cut at spaces, not by pysbd (its regexes slow down)


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def sentences(text: str) -> list[str]:
    """`text` as sentences whose concatenation is `text` exactly: line by line, each line split by
    pysbd (its pieces re-aligned to the line, so no character is lost or moved)."""
    out: list[str] = []
    for line in _LINES.findall(text):
        if not line.strip() or len(line) > PYSBD_MAX_CHARS:
            out.append(line)
            continue
        pos = 0
        for piece in _segmenter().segment(line):
            found = line.find(piece.strip(), pos) if piece.strip() else -1
            if found < 0:
                continue
            end = found + len(piece.strip())
            if end > pos:
                out.append(line[pos:end])
                pos = end
        if pos < len(line):
            if out and pos > 0 and not line[pos:].strip():
                out[-1] += line[pos:]  # trailing spaces and the newline stay with the last sentence
            else:
                out.append(line[pos:])
    return out


def _split_long(piece: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """A piece over `limit` tokens cut at spaces (a word over it at characters)."""
    out: list[str] = []
    cur = ""
    for word in _WORDS.findall(piece):
        if count(word) > limit:  # one "word" over the limit: cut into character runs
            if cur:
                out.append(cur)
                cur = ""
            step = max(1, limit * CHARS_PER_TOKEN)
            while True:
                parts = [word[i:i + step] for i in range(0, len(word), step)]
                if all(count(p) <= limit for p in parts) or step == 1:
                    break
                step = max(1, step // 2)
            out.extend(parts)
            continue
        if cur and count(cur + word) > limit:
            out.append(cur)
            cur = word
        else:
            cur += word
    if cur:
        out.append(cur)
    return out


def chunk_text(text: str, limit: int = 300, count: Callable[[str], int] = estimate_tokens) -> list[str]:
    """`text` in chunks of at most about `limit` tokens, cut at sentence boundaries where possible.
    ``"".join(chunk_text(t)) == t`` always; whitespace-only chunks are kept in that join, and
    `chunks_to_send` leaves them out."""
    if limit < 1:
        raise ConfigError("rephrase.chunk_tokens: must be >= 1")
    chunks: list[str] = []
    cur, cur_n = "", 0
    for sent in sentences(text):
        n = count(sent)
        if n > limit:
            if cur:
                chunks.append(cur)
                cur, cur_n = "", 0
            chunks.extend(_split_long(sent, limit, count))
            continue
        if cur and cur_n + n > limit:
            chunks.append(cur)
            cur, cur_n = "", 0
        cur += sent
        cur_n += n
    if cur:
        chunks.append(cur)
    return chunks


def chunks_to_send(text: str, limit: int = 300, count: Callable[[str], int] = estimate_tokens) -> list[str]:
    """The chunks that go to the model: `chunk_text`'s, stripped, whitespace-only ones left out
    (a blank run between two chunks carries nothing to rephrase)."""
    return [c.strip() for c in chunk_text(text, limit, count) if c.strip()]


# ---- clean-up ---------------------------------------------------------------------------------

_LEAD = [
    # "Sure!", "Certainly.", "Of course," and the like on their own
    # (a lone interjection: "Sure!", "Certainly." or "Of course," then a new line or "Here ...")
    re.compile(r"^\s*(?:sure|certainly|of course|absolutely|okay|ok)[!.,]+(?:\s*\n|\s+(?=here\b))\s*", re.I),
    # "Here is a paraphrase of the paragraph ...:" / "Here's the conversational format:" up to its
    # colon: only when it names what it introduces (a paraphrase, a version, a format, ...)
    re.compile(r"^\s*here(?:'s| is| are)\b[^\n:]{0,120}\b(?:paraphras\w*|rephras\w*|rewrit\w*|version|"
               r"format|conversation\w*|rewording|simplifi\w*|text|paragraph|passage|questions?|q&a)\b"
               r"[^\n:]{0,60}:[ \t]*\n?\s*", re.I),
    # "Paraphrase:", "Rephrased text:", "Simplified version:" as a heading
    re.compile(r"^\s*\**\s*(?:a |the )?(?:paraphrased?|rephrased?|rewritten|simplified|revised)"
               r"(?: (?:text|version|paragraph|passage))?\s*\**\s*:\s*\**[ \t]*\n?\s*", re.I),
]
_TRAIL = re.compile(r"\n\s*(?:I hope (?:this|that) helps|Let me know if|Feel free to)[^\n]*\s*$", re.I)


def strip_boilerplate(text: str) -> str:
    """The answer without the assistant's leading preamble and trailing offer."""
    out = text.strip()
    changed = True
    while changed and out:
        changed = False
        for rule in _LEAD:
            new = rule.sub("", out, count=1)
            if new != out and new.strip():
                out, changed = new.strip(), True
    out = _TRAIL.sub("", out).strip()
    return out
