"""Winnow's errors: one root, a few kinds under it. Standard library only, so every package
(filters and mixers included, which never import Spark) raises the same classes, and the CLI
catches one root.

Every class here is an error the *user* can fix. The CLI prints its message as one line on stderr
and exits with status 2, never a traceback; so a message names the file, key, value or limit
involved. A bug in Winnow is any other exception.
"""
from __future__ import annotations


class WinnowError(Exception):
    """An error the user can fix: printed as one line, never a traceback."""


class ConfigError(WinnowError):
    """A configuration or parameter that cannot run: the message names the key or field."""


class UsageError(ConfigError):
    """A command line that cannot run: missing or contradictory arguments."""


class ScorerError(ConfigError, ValueError):
    """A scorer that cannot be used: unknown kind, missing or corrupt model, wrong labels, a bad
    option. Also a ValueError, as the scorers' value checks have always raised."""


class OutputError(WinnowError):
    """An output directory Winnow may not write into, or may not clear."""


class PathEscapes(OutputError, ValueError):
    """A name or path that would land outside the directory it must stay in."""


class AccountingError(WinnowError):
    """A stage's counts do not add up: in != kept + removed."""


class BackendError(WinnowError):
    """An LLM server or model that refuses the whole run: a bad key, an unknown model, a request
    it rejects as malformed (HTTP 400/401/403/404/422), an unreachable server at start, a model
    directory that does not load."""
