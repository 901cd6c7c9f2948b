"""One server interceptor for request ids, the per-RPC log line and error mapping.

Every handler of every service runs inside it:
- the request id comes from the ``x-request-id`` metadata or is made here, is
  set in a context variable for the handler, and goes back in trailing metadata;
- one log line per RPC: method, status code, latency, request id (never the
  request body, so never a location);
- a :class:`GeoplexError` becomes its status code with ``ErrorInfo`` details;
  anything else becomes INTERNAL with a generic message and a logged traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from .context import REQUEST_ID_HEADER, request_id
from .errors import GeoplexError
from .status import INTERNAL_STATUS, to_status

log = logging.getLogger("geoplex.rpc")
_MAX_REQUEST_ID = 128


def _incoming_request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value:
            cleaned = "".join(ch for ch in value[:_MAX_REQUEST_ID] if ch.isprintable())
            if cleaned:
                return cleaned
    return uuid.uuid4().hex


class _Call:
    """Bookkeeping for one RPC: its id, start time, and how it ended."""

    __slots__ = ("method", "rid", "started", "code")

    def __init__(self, method: str, rid: str) -> None:
        self.method = method
        self.rid = rid
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK

    def begin(self, context: grpc.aio.ServicerContext) -> None:
        request_id.set(self.rid)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, self.rid),))

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """Turn an exception into a status; always raises."""
        if isinstance(exc, grpc.aio.AbortError):
            self.code = _context_code(context, grpc.StatusCode.UNKNOWN)
            raise exc
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, GeoplexError):
            status = to_status(exc)
        else:
            log.error("unhandled error in %s rid=%s", self.method, self.rid, exc_info=exc)
            status = INTERNAL_STATUS
        self.code = status.code
        trailing = ((REQUEST_ID_HEADER, self.rid), *tuple(status.trailing_metadata))
        try:
            await context.abort(status.code, status.details, trailing_metadata=trailing)
        except grpc.aio.AbortError as abort:
            # cut the chain: the original exception's text must not reach a trace span
            raise abort from None
        except Exception:  # noqa: BLE001 - the call is already gone (client cancelled)
            self.code = grpc.StatusCode.CANCELLED
            raise asyncio.CancelledError() from None

    def end(self, context: grpc.aio.ServicerContext) -> None:
        if self.code is grpc.StatusCode.OK:
            self.code = _context_code(context, grpc.StatusCode.OK)
        if log.isEnabledFor(logging.INFO):
            log.info("rpc %s code=%s ms=%.2f rid=%s", self.method, self.code.name,
                     (time.perf_counter() - self.started) * 1000.0, self.rid)


def _context_code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc without ServicerContext.code()
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    return default


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str,
                details: grpc.HandlerCallDetails) -> Callable[..., Awaitable[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, _incoming_request_id(details))
        call.begin(context)
        try:
            return await behavior(request_or_iterator, context)
        except BaseException as exc:  # noqa: BLE001 - mapped, then re-raised
            await call.fail(exc, context)
        finally:
            call.end(context)

    return handler


def _wrap_stream(behavior: Callable[..., Any], method: str,
                 details: grpc.HandlerCallDetails) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):
        async def generator(request_or_iterator: Any,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(method, _incoming_request_id(details))
            call.begin(context)
            try:
                async for response in behavior(request_or_iterator, context):
                    yield response
            except BaseException as exc:  # noqa: BLE001 - mapped, then re-raised
                await call.fail(exc, context)
            finally:
                call.end(context)

        return generator
    return _wrap_unary(behavior, method, details)


class GeoplexServerInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.reflection.") or method.startswith("/grpc.health."):
            return handler
        if handler.unary_unary:
            return handler._replace(
                unary_unary=_wrap_unary(handler.unary_unary, method, handler_call_details))
        if handler.stream_unary:
            return handler._replace(
                stream_unary=_wrap_unary(handler.stream_unary, method, handler_call_details))
        if handler.unary_stream:
            return handler._replace(
                unary_stream=_wrap_stream(handler.unary_stream, method, handler_call_details))
        return handler._replace(
            stream_stream=_wrap_stream(handler.stream_stream, method, handler_call_details))
