"""Shared by the notifier's unit tests: routing configurations from YAML text, and a
clock the tests move by hand."""

from __future__ import annotations

import textwrap

from geoplex.servers.notifier.config import Alerting, parse_alerting_text

T0 = 1_700_000_000.0


def alerting(text: str) -> Alerting:
    return parse_alerting_text(textwrap.dedent(text), "test.yml")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
