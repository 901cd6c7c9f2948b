"""What the maps service's consumer groups share: read the locations topic forever,
decoded, and stop within a bound.

Each group (the trip history, the traffic feed) keeps its own position on the topic. A
record that is not a location batch is skipped and logged by its position only (never
its content); a failure the group can recover from (the broker, MongoDB) makes it rejoin
after a second and take the records from its last commit again: at least once, so every
handler is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from geoplex.clients.broker import BrokerClient
from geoplex.clients.errors import GeoplexError

from . import convert
from .locations import Fix

logger = logging.getLogger(__name__)

STOP_GRACE_S = 3.0
Handler = Callable[[str, str, list[Fix]], Awaitable[None]]  # (user, batch_id, fixes)


async def consume_batches(broker: BrokerClient, group: str, topic: str, handle: Handler, *,
                          auto_offset_reset: str,
                          recoverable: tuple[type[BaseException], ...] = ()) -> None:
    """``handle`` every location batch on ``topic`` as consumer group ``group``, forever."""
    retry_on: tuple[type[BaseException], ...] = (GeoplexError, *recoverable)
    while True:
        try:
            async with broker.consumer(group, [topic],
                                       auto_offset_reset=auto_offset_reset) as consumer:
                async for record in consumer:
                    try:
                        user, batch_id, fixes = convert.location_record_from(record.value)
                    except ValueError:
                        logger.warning("%s: skipped an unreadable record at %s/%d offset %d",
                                       group, record.topic, record.partition, record.offset)
                        continue
                    await handle(user, batch_id, fixes)
        except retry_on as exc:
            logger.warning("%s: consumer stopped (%s); rejoining", group, type(exc).__name__)
            await asyncio.sleep(1.0)
