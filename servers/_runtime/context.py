"""Per-RPC context shared by interceptors and handlers (request id): the SDK's
(``geoplex.clients.context``), so a client called inside a handler sends the same id on."""

from __future__ import annotations

from geoplex.clients.context import REQUEST_ID_HEADER, request_id

__all__ = ["REQUEST_ID_HEADER", "request_id"]
