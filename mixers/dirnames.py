"""Names from records and configs (domains, variant names, scorer names) as directory and file
names that cannot leave the directory they are written in.

A name a user or a record gives (`domain = "../../x"`, a domain `/etc`, a scorer named `a/b`) is
never joined to a path as it is. `dir_name` keeps a plain name as it is, so the usual layout stays
readable (``code/bucket_8``), and encodes every other name reversibly:

- plain: 1 to 120 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit, not one of
  the names Winnow writes into an output directory itself (``kept``, ``models``, ...) and not
  starting with ``bucket_`` or ``concat_`` (the names of export datasets);
- otherwise ``%`` followed by the name with every character outside ``A-Z a-z 0-9 _ . -``
  percent-encoded as its UTF-8 bytes (``%2F`` for ``/``), so ``../x`` becomes ``%..%2Fx``;
- an encoded form longer than 120 characters is cut and ends ``~<xxh3-64 of the name>``; that
  one is not reversible by itself, which is why the manifests that list directories also map
  each back to its name.

A plain name never starts with ``%`` and an encoded one always does, so no two names share a
directory. `name_of` undoes `dir_name` (None for a cut name). `inside(root, *parts)` joins and
checks that the result resolves (symlinks followed) inside `root`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

from core.errors import PathEscapes

MAX_LEN = 120
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (MAX_LEN - 1))
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# What Winnow writes at the top of an output directory; a domain directory may not take these.
RESERVED = frozenset({
    "kept", "removed", "selected", "models", "plots", "validate", "manifest.json", "report.md",
    "validate.json", "tokenizer.json", ".winnow-owned.json",
})
RESERVED_PREFIXES = ("bucket_", "concat_")


def is_plain(name: str) -> bool:
    return (bool(_PLAIN.fullmatch(name)) and name not in RESERVED
            and not name.startswith(RESERVED_PREFIXES))


def dir_name(name: str) -> str:
    """`name` as one safe path component (see the module docstring)."""
    if not isinstance(name, str):
        raise TypeError(f"a name must be a string, not {type(name).__name__}")
    if is_plain(name):
        return name
    parts = ["%"]
    for ch in name:
        if ch in _SAFE:
            parts.append(ch)
        else:
            parts.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    encoded = "".join(parts)
    if len(encoded) <= MAX_LEN:
        return encoded
    import xxhash

    digest = xxhash.xxh3_64_hexdigest(name.encode("utf-8", "surrogatepass"))
    head = encoded[: MAX_LEN - len(digest) - 1]
    head = head[: head.rfind("%")] if head.rfind("%") > len(head) - 3 else head  # no cut escape
    return f"{head}~{digest}"


def name_of(directory: str) -> str | None:
    """The name `dir_name` made `directory` from; None when it was cut (see the manifest)."""
    if not directory.startswith("%"):
        return directory
    if "~" in directory:
        return None
    return unquote_to_bytes(directory[1:]).decode("utf-8", "surrogatepass")


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """`root` joined with `parts`, checked to resolve inside `root` (symlinks followed)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and not target.is_relative_to(base):
        raise PathEscapes(f"{Path(root).joinpath(*parts)} resolves to {target}, outside {base}")
    return target
