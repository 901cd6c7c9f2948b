"""Bearer tokens: HS256-signed JWTs whose subject is the caller's user id.

The secret comes from ``GEOPLEX_AUTH_SECRET``; ``geoplex auth dev-token`` mints
tokens for local use with the same secret. A missing, malformed, expired or
wrongly signed token is UNAUTHENTICATED; the user never comes from a message.
The subject is checked here, once for every service, by the rule of a user id
(1..128 printable characters); a token that breaks it is TOKEN_INVALID, and the
error never echoes the subject.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jwt

from .config import ConfigError, Env
from .errors import Unauthenticated
from .validate import MAX_ID_LENGTH, is_id

DEV_SECRET = "geoplex-dev-secret-change-me-in-production"
ISSUER = "geoplex"
_ALGORITHM = "HS256"
MAX_SUBJECT_LENGTH = MAX_ID_LENGTH  # a subject is a user id


def auth_secret(env: Env | None = None) -> str:
    secret = (env or Env()).str("GEOPLEX_AUTH_SECRET", DEV_SECRET)
    if len(secret.encode()) < 32:
        raise ConfigError("GEOPLEX_AUTH_SECRET: expected at least 32 bytes (HS256 key)")
    return secret


def mint_token(secret: str, subject: str, ttl_seconds: int = 24 * 3600) -> str:
    """A token for user ``subject`` valid ``ttl_seconds``; ValueError (a one-line message
    that never echoes the subject) for an empty or invalid subject or a ttl under 1."""
    if not subject:
        raise ValueError("token subject must not be empty: give the user id it is for")
    if not is_id(subject):
        raise ValueError(f"token subject must be a user id of 1..{MAX_SUBJECT_LENGTH} "
                         f"printable characters (got {len(subject)} characters"
                         f"{'' if subject.isprintable() else ', not all printable'})")
    if ttl_seconds <= 0:
        raise ValueError(f"token ttl_seconds must be a positive number of seconds "
                         f"(got {ttl_seconds})")
    now = int(time.time())
    return jwt.encode({"sub": subject, "iss": ISSUER, "iat": now, "exp": now + ttl_seconds},
                      secret, algorithm=_ALGORITHM)


class TokenVerifier:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def subject(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The user id from the ``authorization: Bearer <jwt>`` metadata, or Unauthenticated."""
        header = ""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                header = value
                break
        if not header:
            raise Unauthenticated("missing bearer token: send metadata "
                                  "'authorization: Bearer <token>' (geoplex auth dev-token)",
                                  reason="TOKEN_MISSING")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'",
                                  reason="TOKEN_MALFORMED")
        try:
            claims = jwt.decode(token.strip(), self._secret, algorithms=[_ALGORITHM],
                                issuer=ISSUER, options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("bearer token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("bearer token is invalid or wrongly signed",
                                  reason="TOKEN_INVALID") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("bearer token has no subject", reason="TOKEN_INVALID")
        if not is_id(subject):
            raise Unauthenticated(f"bearer token subject is not a user id (1..{MAX_SUBJECT_LENGTH}"
                                  " printable characters)", reason="TOKEN_INVALID")
        return subject
