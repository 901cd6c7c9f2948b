"""What the notifier's contract tests share besides fixtures: the timers of the test
configuration, and unique labels."""

from __future__ import annotations

import uuid

GROUP_WAIT_S = 0.3
GROUP_INTERVAL_S = 0.5
REPEAT_S = 2.0  # the route of alerts labelled scenario="repeat"
RETRY_ATTEMPTS = 3


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
