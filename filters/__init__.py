"""Scorers over plain lists of strings: no Spark. Importing the package registers every scorer kind
(filters/registry.py); the order here is the order `winnow score --help` lists them."""
from . import heuristics, dclm, langid, perplexity, preselect, dfn  # noqa: F401  (each module registers its kind)
