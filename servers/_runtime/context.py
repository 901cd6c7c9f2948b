"""Per-RPC context shared by interceptors and handlers (request id)."""

from __future__ import annotations

import contextvars

REQUEST_ID_HEADER = "x-request-id"
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("geoplex_request_id",
                                                                 default="-")
