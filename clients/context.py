"""What a call carries from the call that caused it: its request id and its trace.

A server handler's request id lives in :data:`request_id` (the runtime's interceptor sets
it for the call); a client made inside that handler sends the same id on to the next
service, so one user request has one id in every service's log. The W3C trace context
of the current span (when tracing is on) goes along in the same metadata
(``traceparent``), so the next service's spans join the same trace.
"""

from __future__ import annotations

import contextvars
import uuid

from opentelemetry import propagate

REQUEST_ID_HEADER = "x-request-id"
NO_REQUEST = "-"
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("geoplex_request_id",
                                                                 default=NO_REQUEST)


def outgoing() -> tuple[str, list[tuple[str, str]]]:
    """The request id for a call made now (the current one's, else a new one) and the
    metadata that carries it and the current trace context."""
    rid = request_id.get()
    if not rid or rid == NO_REQUEST:
        rid = uuid.uuid4().hex
    carrier: dict[str, str] = {}
    propagate.inject(carrier)   # nothing when no span is current (tracing off)
    return rid, [(REQUEST_ID_HEADER, rid), *carrier.items()]
