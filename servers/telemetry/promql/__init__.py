"""PromQL for the telemetry service: ``parse(text)`` turns a query into the frozen
dataclasses of :mod:`.ast`, checked the way Prometheus checks them (pure Python, no I/O).
"""

from .ast import FUNCTIONS, Expr, Function, ValueType
from .parser import PromQLError, PromQLSyntaxError, PromQLUnsupported, parse

__all__ = ["FUNCTIONS", "Expr", "Function", "PromQLError", "PromQLSyntaxError",
           "PromQLUnsupported", "ValueType", "parse"]
