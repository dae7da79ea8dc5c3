"""The answer cache: one small JSON file per answered request, named by its key
(`synth.wrap.cache_key`: model, sampling settings, prompt version and text, style, chunk hash).

- A file is written under a unique temporary name in its final directory and renamed into place,
  so a reader sees a whole answer or none, and a process killed mid-write (SIGKILL, a lost Spark
  executor) leaves at most a stray ``.tmp-*`` file, never a half answer under a key. Several
  tasks may write the same key at once: the last rename wins, and both hold an answer.
- Keys spread over 256 x 256 directories (``ab/cd/abcd....json``), so no directory grows past a
  few thousand files at 100 million answers.
- Only answers are cached, never failures: a rerun asks again for a chunk that failed.
- The files hold the answer text, its finish reason and token counts, and nothing from the
  request's headers (no API key).
- It needs a file system every task can reach: local disk for a one-machine run, a shared mount
  (NFS, a FUSE bucket) on a cluster. Nothing is fsynced: an answer written before a process was
  killed survives; one written just before the machine lost power may not, and is asked again.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


class AnswerCache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self.path(key), "rb") as fh:
                value = json.loads(fh.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):  # unreadable or not JSON: treated as absent, asked again
            return None
        return value if isinstance(value, dict) and isinstance(value.get("text"), str) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(value, fh, ensure_ascii=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def __len__(self) -> int:
        """Answers held (walks the tree: for tests and reports, not hot paths)."""
        return sum(1 for _ in self.root.glob("??/??/*.json")) if self.root.is_dir() else 0
