"""Pagination every service shares (AIP-158): page sizes and opaque cursor tokens.

A cursor is the (position, key) of the last item of a page — e.g. (distance,
id) for a nearest-first list, (0, id) for an id-ordered one — bound to a
hash of its *scope* (the query, or the caller), so a token is refused by any
other request. Tokens carry no coordinates: the scope is only hashed.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from .errors import InvalidArgument

_POSITION = struct.Struct(">d")
_SCOPE_BYTES = 8


def page_size(value: int, default: int, maximum: int, field: str = "page_size") -> int:
    """``value``, or ``default`` for 0; INVALID_ARGUMENT outside 1..maximum."""
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise InvalidArgument(field, f"must be in 1..{maximum} (0 means {default})",
                              reason="INVALID_PAGE_SIZE")
    return value


def _scope_hash(scope: str) -> bytes:
    return hashlib.blake2b(scope.encode(), digest_size=_SCOPE_BYTES).digest()


def encode_cursor(position: float, key: str, scope: str = "") -> str:
    raw = _scope_hash(scope) + _POSITION.pack(position) + key.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, scope: str = "") -> tuple[float, str]:
    """The (position, key) a token was made from; INVALID_ARGUMENT if foreign or malformed."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        bound, rest = raw[:_SCOPE_BYTES], raw[_SCOPE_BYTES:]
        (position,) = _POSITION.unpack(rest[:_POSITION.size])
        key = rest[_POSITION.size:].decode()
    except (ValueError, struct.error, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token this service issued",
                              reason="INVALID_PAGE_TOKEN") from None
    if bound != _scope_hash(scope) or not key:
        raise InvalidArgument("page_token", "belongs to a different request; repeat the "
                              "parameters of the first page", reason="INVALID_PAGE_TOKEN")
    return position, key
