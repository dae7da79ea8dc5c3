"""The kind of a removed row's reason (see `stage`'s docstring), without Spark: the local engine's
workers count kinds with it, and `stage.reason_kind_column` is the same rule as a Spark expression."""
from __future__ import annotations

import re

# Written for Python's `re` and Java's regex alike.
REASON_KIND = r"^(.*?)(?::| of | at |$)"
TRAILING = r"[\s,]+$"


def reason_kind(reason: str) -> str:
    """The kind of one reason, as `removed_by_reason` counts it."""
    return re.sub(TRAILING, "", re.match(REASON_KIND, reason, re.DOTALL).group(1))
