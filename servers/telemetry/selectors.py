"""A PromQL series selector (``up{job="api"}``, as ListSeries and the HTTP API's
``match[]`` take) as the store's matchers."""

from __future__ import annotations

from geoplex.servers._runtime.errors import InvalidArgument

from .promql import PromQLError, parse
from .promql.ast import VectorSelector
from .tsdb.labels import Matcher


def parse_selector(text: str) -> list[Matcher]:
    """The matchers of one series selector; InvalidArgument for anything else (a query
    that does not parse, a range or an expression), with the parser's position."""
    try:
        expr = parse(text)
    except PromQLError as exc:
        raise InvalidArgument("match", str(exc), reason="INVALID_SELECTOR") from None
    if not isinstance(expr, VectorSelector) or expr.offset_ms or expr.at is not None:
        raise InvalidArgument("match", "expected a series selector such as "
                              "up{job=\"api\"}, not an expression", reason="INVALID_SELECTOR")
    return [Matcher.parse_op(m.name, str(m.op), m.value) for m in expr.matchers]
