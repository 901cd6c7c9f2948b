"""What every channel does around its delivery: drop resolved alerts when the config
says ``send_resolved: false`` (Alertmanager does this per integration), refuse to send
once closed, and log one line per notification (receiver, integration, outcome; never a
label value: labels may be sensitive)."""

from __future__ import annotations

import dataclasses
import logging
import time

from ..notification import DeliveryError, Notification

logger = logging.getLogger(__name__)


class BaseChannel:
    """A channel of one receiver: ``index`` is its place in the receiver's
    ``<integration>_configs`` list."""

    integration: str = ""

    def __init__(self, receiver: str, index: int, *, send_resolved: bool) -> None:
        self.receiver = receiver
        self.index = index
        self.send_resolved = send_resolved
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.receiver}/{self.integration}[{self.index}]>"

    def selected(self, n: Notification) -> Notification | None:
        """What this channel sends of ``n``: without its resolved alerts unless
        ``send_resolved``; None when nothing is left to send."""
        if self.send_resolved:
            return n
        alerts = tuple(alert for alert in n.alerts if alert.status == "firing")
        if not alerts:
            return None
        if len(alerts) == len(n.alerts):
            return n
        return dataclasses.replace(n, alerts=alerts)

    async def send(self, n: Notification) -> None:
        """Deliver ``n``; raises :class:`DeliveryError` (``retryable`` says whether a
        retry may help)."""
        if self._closed:
            raise DeliveryError(f"{self!r} is closed", retryable=True)
        chosen = self.selected(n)
        if chosen is None:
            logger.debug("notify receiver=%s integration=%s[%d] kind=%s key=%s "
                         "outcome=skipped (resolved only, send_resolved false)",
                         self.receiver, self.integration, self.index, n.kind.value,
                         n.idempotency_key)
            return
        started = time.monotonic()
        try:
            await self.deliver(chosen, n.idempotency_key)
        except DeliveryError as err:
            logger.warning("notify receiver=%s integration=%s[%d] kind=%s alerts=%d key=%s "
                           "outcome=failed retryable=%s latency_ms=%.1f: %s",
                           self.receiver, self.integration, self.index, n.kind.value,
                           len(chosen.alerts), n.idempotency_key, err.retryable,
                           (time.monotonic() - started) * 1000, err)
            raise
        logger.info("notify receiver=%s integration=%s[%d] kind=%s alerts=%d key=%s "
                    "outcome=delivered latency_ms=%.1f",
                    self.receiver, self.integration, self.index, n.kind.value,
                    len(chosen.alerts), n.idempotency_key,
                    (time.monotonic() - started) * 1000)

    async def deliver(self, n: Notification, idempotency_key: str) -> None:
        """Send ``n`` (already filtered); ``idempotency_key`` is the original
        notification's key, which the filtering must not change."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the client; later sends fail. Idempotent."""
        self._closed = True
        await self.release()

    async def release(self) -> None:
        """Close the channel's client (a subclass's session)."""
