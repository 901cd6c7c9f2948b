"""One server interceptor for request ids, the per-RPC log line, error mapping and metrics.

Every handler of every service runs inside it:
- the request id comes from the ``x-request-id`` metadata or is made here, is
  set in a context variable for the handler, and goes back in trailing metadata;
- one log line per RPC: method, status code, latency, request id (never the
  request body, so never a location);
- a :class:`GeoplexError` becomes its status code with ``ErrorInfo`` details;
  anything else becomes INTERNAL with a generic message and a logged traceback;
- a client cancelling (or leaving) is normal: the line says CANCELLED, nothing else is
  logged. A server stream's handler generator is closed at once (its ``finally`` runs
  now, not when the garbage collector gets to it), and grpc.aio's own error line for a
  write the transport refused because the client had gone is filtered out
  (:class:`ClientGoneFilter`). Responses are still yielded to grpc.aio, whose send path is
  the fast one: writing each with ``context.write`` cost the presence benchmark ~25 %
  more server CPU per fan-out message;
- with metrics on (``metrics.py``), each RPC's duration by method and status code and the
  streams open by method, into :class:`RpcMetrics` (~3 us a call); with metrics off
  there is nothing to record into and nothing is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeAlias, TypeVar, cast

import grpc
import grpc.aio

from .context import REQUEST_ID_HEADER, request_id
from .errors import GeoplexError
from .metrics import RpcMetrics
from .status import INTERNAL_STATUS, to_status

log = logging.getLogger("geoplex.rpc")
# services whose successful calls are logged at debug only (internal, periodic)
QUIET_PREFIXES = ("/geoplex.broker.v1.ReplicaService/",)
_MAX_REQUEST_ID = 128

_TRequest = TypeVar("_TRequest")
_TResponse = TypeVar("_TResponse")
_In = TypeVar("_In")  # what a behaviour reads: the request, or the client stream's iterator
_Out = TypeVar("_Out")  # what it answers: the response (None for a stream written by hand)

# The interceptor wraps the handlers of every method, so their message types are open.
_Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# A behaviour as grpc.aio calls it: a coroutine function, or for a server stream an
# async generator function (or a coroutine function that writes with context.write).
_UnaryBehavior: TypeAlias = Callable[[_In, _Context], Awaitable[_Out]]
_StreamBehavior: TypeAlias = (Callable[[_In, _Context], AsyncIterator[_Out]]
                              | Callable[[_In, _Context], Awaitable[None]])


class _AioMethodHandler(Protocol[_TRequest, _TResponse]):
    """A ``grpc.RpcMethodHandler`` as grpc.aio serves it.

    grpc builds them as a namedtuple (``grpc._utilities.RpcMethodHandler``); the grpc stub
    declares only the abstract class, with synchronous behaviours and no ``_replace``.
    """

    unary_unary: _UnaryBehavior[_TRequest, _TResponse] | None
    unary_stream: _StreamBehavior[_TRequest, _TResponse] | None
    stream_unary: _UnaryBehavior[AsyncIterator[_TRequest], _TResponse] | None
    stream_stream: _StreamBehavior[AsyncIterator[_TRequest], _TResponse] | None

    def _replace(self, **behaviors: Any) -> grpc.RpcMethodHandler[_TRequest, _TResponse]: ...


def _incoming_request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value:
            cleaned = "".join(ch for ch in value[:_MAX_REQUEST_ID] if ch.isprintable())
            if cleaned:
                return cleaned
    return uuid.uuid4().hex


class _Call:
    """Bookkeeping for one RPC: its id, start time, and how it ended."""

    __slots__ = ("method", "rid", "started", "code", "metrics", "streaming")

    def __init__(self, method: str, rid: str, metrics: RpcMetrics | None = None,
                 streaming: bool = False) -> None:
        self.method = method
        self.rid = rid
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.metrics = metrics
        self.streaming = streaming

    def begin(self, context: _Context) -> None:
        request_id.set(self.rid)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, self.rid),))
        if self.streaming and self.metrics is not None:
            self.metrics.stream_opened(self.method)

    async def fail(self, exc: BaseException, context: _Context) -> NoReturn:
        """Turn an exception into a status; always raises."""
        if isinstance(exc, grpc.aio.AbortError):
            self.code = _context_code(context, grpc.StatusCode.UNKNOWN)
            raise exc
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            # the client cancelled or left; a GeneratorExit must not be awaited past
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

    def end(self, context: _Context) -> None:
        if self.code is grpc.StatusCode.OK:
            self.code = _context_code(context, grpc.StatusCode.OK)
        elapsed = time.perf_counter() - self.started
        metrics = self.metrics
        if metrics is not None:
            if self.streaming:
                metrics.stream_closed(self.method)
                metrics.record(self.method, self.code, elapsed, "stream")
            else:
                metrics.record(self.method, self.code, elapsed,
                               "poll" if self.method in metrics.long_polls else "")
        level = rpc_log_level(self.method, self.code)
        if log.isEnabledFor(level):
            log.log(level, "rpc %s code=%s ms=%.2f rid=%s", self.method, self.code.name,
                    elapsed * 1000.0, self.rid)


def rpc_log_level(method: str, code: grpc.StatusCode) -> int:
    """INFO for a finished call; DEBUG for a successful internal periodic one (a broker
    node's replication long-polls answer every half second per partition: a line each
    would bury the log), which still shows at INFO when it fails."""
    if code is grpc.StatusCode.OK and method.startswith(QUIET_PREFIXES):
        return logging.DEBUG
    return logging.INFO


def _context_code(context: _Context, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        # the stub says StatusCode; grpc.aio answers None until a code is set
        code = cast("grpc.StatusCode | None", context.code())
    except Exception:  # noqa: BLE001 - older grpc without ServicerContext.code()
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    return default


def _wrap_unary(behavior: _UnaryBehavior[_In, _Out], method: str,
                details: grpc.HandlerCallDetails, metrics: RpcMetrics | None,
                streaming: bool = False) -> _UnaryBehavior[_In, _Out]:
    async def handler(request_or_iterator: _In, context: _Context) -> _Out:
        call = _Call(method, _incoming_request_id(details), metrics, streaming)
        call.begin(context)
        try:
            return await behavior(request_or_iterator, context)
        except BaseException as exc:  # noqa: BLE001 - mapped, then re-raised
            await call.fail(exc, context)
        finally:
            call.end(context)

    return handler


class ClientGoneFilter(logging.Filter):
    """Drops grpc.aio's ERROR for a stream write the transport refused because the client
    had cancelled or gone: normal for a stream, and logged by our RPC line as CANCELLED."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.ERROR and isinstance(record.msg, str)
                    and record.msg.startswith("ExecuteBatchError raised in core by servicer"))


class ClosedElsewhereFilter(logging.Filter):
    """Drops OpenTelemetry's ERROR when a cancelled stream's generator is closed from
    another context than the one it ran in (its span context cannot be detached there):
    the span is ended all the same; upstream, opentelemetry-python#2606."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or record.getMessage() != "Failed to detach context":
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, ValueError) and "different Context" in str(exc))


logging.getLogger("grpc._cython.cygrpc").addFilter(ClientGoneFilter())
logging.getLogger("opentelemetry.context").addFilter(ClosedElsewhereFilter())


def _wrap_stream(behavior: _StreamBehavior[_In, _Out], method: str,
                 details: grpc.HandlerCallDetails,
                 metrics: RpcMetrics | None) -> _StreamBehavior[_In, _Out]:
    if inspect.isasyncgenfunction(behavior):
        async def generator(request_or_iterator: _In, context: _Context) -> AsyncIterator[_Out]:
            call = _Call(method, _incoming_request_id(details), metrics, streaming=True)
            call.begin(context)
            try:
                async with contextlib.aclosing(
                        behavior(request_or_iterator, context)) as responses:
                    async for response in responses:
                        yield response
            except BaseException as exc:  # noqa: BLE001 - mapped, then re-raised
                await call.fail(exc, context)
            finally:
                call.end(context)

        return generator
    # not an async generator function: the coroutine function of a stream written by hand
    return _wrap_unary(cast("_UnaryBehavior[_In, None]", behavior), method, details, metrics,
                       streaming=True)


class GeoplexServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: RpcMetrics | None = None) -> None:
        self.metrics = metrics  # None: metrics are off

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[_TRequest, _TResponse] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_TRequest, _TResponse] | None:
        found = await continuation(handler_call_details)
        if found is None:
            return found
        method = handler_call_details.method
        if method.startswith("/grpc.reflection.") or method.startswith("/grpc.health."):
            return found
        # the stub types the behaviours as synchronous; see _AioMethodHandler
        handler = cast("_AioMethodHandler[_TRequest, _TResponse]", found)
        details, metrics = handler_call_details, self.metrics
        if handler.unary_unary:
            return handler._replace(
                unary_unary=_wrap_unary(handler.unary_unary, method, details, metrics))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(
                handler.stream_unary, method, details, metrics, streaming=True))
        if handler.unary_stream:
            return handler._replace(
                unary_stream=_wrap_stream(handler.unary_stream, method, details, metrics))
        # grpc's handler constructors set exactly one behaviour, so this is the one
        stream_stream = cast("_StreamBehavior[AsyncIterator[_TRequest], _TResponse]",
                             handler.stream_stream)
        return handler._replace(
            stream_stream=_wrap_stream(stream_stream, method, details, metrics))
