"""Values quoted in messages: a refusal names what it refused, cut short.

A crafted config, checkpoint record or command-line option may hold a value of megabytes; an error
that echoed it in full would bury the one line a user needs to read.
"""

from __future__ import annotations

from typing import Any


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters, followed by ``...`` when cut.

    Example:
        >>> short_repr("x" * 500, limit=8)
        "'xxxxxxx..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
