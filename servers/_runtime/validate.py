"""Checks a service runs at its edge, before a request value reaches a store or an error.

Pure Python, like :mod:`.errors`. An id a client sends must be 1..``max_len``
printable characters (the same rule as a user id); the error names the field
and the rule, never the value.
"""

from __future__ import annotations

from .errors import InvalidArgument

MAX_ID_LENGTH = 128


def is_id(value: object, max_len: int = MAX_ID_LENGTH) -> bool:
    """Whether ``value`` is an id: a string of 1..``max_len`` printable characters."""
    return isinstance(value, str) and 0 < len(value) <= max_len and value.isprintable()


def check_id(field: str, value: str, *, max_len: int = MAX_ID_LENGTH) -> str:
    """``value`` if it is 1..``max_len`` printable characters, else InvalidArgument on
    ``field`` with reason REQUIRED_FIELD (empty), ID_TOO_LONG or INVALID_ID."""
    if not value:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    rule = f"must be 1..{max_len} printable characters"
    if len(value) > max_len:
        raise InvalidArgument(field, f"{rule} (got {len(value)})", reason="ID_TOO_LONG")
    if not value.isprintable():
        raise InvalidArgument(field, f"{rule} (no control characters, tabs or line breaks)",
                              reason="INVALID_ID")
    return value
