"""Redis adapter: the latest-location cache (with TTL) and the per-user channels.

Keys and channels (``p`` is a namespace so several meshes can share a Redis; the
``{user}`` hash tag puts all of a user's keys and channels in one Redis Cluster slot,
so an update's pipeline goes to one node):
- ``{p}loc:{<user>}``  latest location of a user who shares, TTL = inactivity limit
- ``{p}me:{<user>}``   the user's own latest location, for ListNearbyFriends; an update
  stamped before it (another device's, through another server) is refused
- ``{p}conn:{<user>}`` how many live streams the user has on any server (a user may
  stream from two devices through two servers), expiring with inactivity
- ``{p}ch:{<user>}``   channel: the user's location updates and "gone" notices
- ``{p}ctl:{<user>}``  channel: changes to the user's friends and settings, for the
  servers holding that user's streams
One Redis: classic PUBLISH/SUBSCRIBE over one connection per process. A Redis
Cluster: sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7+), so a message is handled by
the one shard owning its channel instead of being broadcast over the cluster bus, and
each process holds one pub/sub connection per primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import MovedError, RedisError, SlotNotCoveredError

from geoplex.servers._runtime.backends import REDIS_UNAVAILABLE, RedisClient, is_cluster

from ..domain import (Change, FeedEvent, Fix, FriendAdded, FriendRemoved, Gone, Located,
                      LocationsUnavailable, RadiusChanged, SharingChanged, Withdrawn)

T = TypeVar("T")
P = ParamSpec("P")

# how long ChannelFeed.add waits for Redis to confirm a subscription (one round trip when
# all is well; a connection being rebuilt is caught up by on_resubscribe instead)
CONFIRM_TIMEOUT_S = 2.0
log = logging.getLogger(__name__)


# -- the message format: JSON, compact; a kind this version does not know is ignored --------
# on ch:  {"k":"loc","f":[lat,lon,t]}  {"k":"gone","r":<Gone value>}
# on ctl: {"k":"friend+","f":<friend>}  {"k":"friend-","f":<friend>}
#         {"k":"sharing","v":<bool>}  {"k":"radius","v":<metres>}

def encode_fix(fix: Fix) -> str:
    return json.dumps([fix.lat, fix.lon, fix.t], separators=(",", ":"))


def _fix_of(value: Any) -> Fix:
    lat, lon, t = value
    return Fix(float(lat), float(lon), float(t))


def decode_fix(raw: bytes | str) -> Fix:
    return _fix_of(json.loads(raw))


def encode_located(raw_fix: str) -> str:
    """A Located message around a fix already encoded (the same text is cached)."""
    return '{"k":"loc","f":' + raw_fix + "}"


def encode_withdrawn(reason: Gone) -> str:
    return json.dumps({"k": "gone", "r": reason.value})


def encode_change(change: Change) -> str:
    match change:
        case FriendAdded(friend_id=friend):
            message: dict[str, object] = {"k": "friend+", "f": friend}
        case FriendRemoved(friend_id=friend):
            message = {"k": "friend-", "f": friend}
        case SharingChanged(sharing=sharing):
            message = {"k": "sharing", "v": sharing}
        case RadiusChanged(radius_m=radius_m):
            message = {"k": "radius", "v": radius_m}
    return json.dumps(message)


def decode_message(kind: str, user: str, raw: bytes | str) -> FeedEvent | None:
    """The event a message on ``user``'s channel (``kind`` "ch") or control channel ("ctl")
    carries; None for a kind of message this version does not know."""
    data = json.loads(raw)
    k = data.get("k")
    if kind == "ch":
        if k == "loc":
            return Located(user, _fix_of(data["f"]))
        if k == "gone":
            return Withdrawn(user, Gone(int(data.get("r", Gone.DISCONNECTED.value))))
    elif kind == "ctl":
        if k == "friend+":
            return FriendAdded(user, str(data["f"]))
        if k == "friend-":
            return FriendRemoved(user, str(data["f"]))
        if k == "sharing":
            return SharingChanged(user, bool(data["v"]))
        if k == "radius":
            return RadiusChanged(user, float(data["v"]))
    return None


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class _Connectable(_Closable, Protocol):
    async def connect(self) -> None: ...


class _FeedPubSub(PubSub):
    """A PubSub that says when it connected again: redis-py reconnects a dropped pub/sub
    connection by itself (and subscribes its channels again), and what was published
    meanwhile is lost, so the feed's owner must catch up."""

    def __init__(self, client: redis.Redis, on_reconnect: Callable[[], None]) -> None:
        super().__init__(client.connection_pool)
        self._on_reconnect = on_reconnect

    async def on_connect(self, connection: Connection) -> None:
        # called on reconnects only (registered after the first connect); it subscribes
        # again what this PubSub had
        had = bool(self.channels or self.shard_channels)
        await super().on_connect(connection)
        if had:
            self._on_reconnect()


class _Rebuild(Exception):
    """Start the feed's connections over (a new node, a moved slot)."""


_SUBSCRIBE_FAILED: tuple[type[BaseException], ...] = (*REDIS_UNAVAILABLE, RedisError, _Rebuild)
_UNSUBSCRIBE_FAILED: tuple[type[BaseException], ...] = (*REDIS_UNAVAILABLE, RedisError)
_CONNECTIONS_LOST: tuple[type[BaseException], ...] = (*REDIS_UNAVAILABLE, _Rebuild, MovedError)


class ChannelFeed:
    """This process's subscriptions, kept across reconnects, failovers and slot moves.

    ``add``/``remove`` change what is wanted; ``run`` (a task) holds the connections and
    hands every message to ``on_message(channel, data)``. When a connection fails, or a
    cluster shard drops a subscription (its slot moved), everything wanted is subscribed
    again on fresh connections, after a backoff. Whenever subscriptions were down and are
    back, ``on_resubscribe()`` is called: messages published meanwhile are lost (pub/sub
    is at most once), so the owner catches up from the system of record.
    """

    def __init__(self, client: RedisClient, on_message: Callable[[str, bytes], None],
                 on_resubscribe: Callable[[], None] = lambda: None) -> None:
        self.r = client
        self.cluster = is_cluster(client)
        self.wanted: set[str] = set()
        self.on_message = on_message
        self.on_resubscribe = on_resubscribe
        self._subs: dict[str, PubSub] = {}   # node name (or "") -> its pub/sub connection
        self._node_clients: list[redis.Redis] = []
        self._dropping: set[str] = set()     # unsubscribed by us, confirmation pending
        self._confirming: dict[str, asyncio.Future[None]] = {}  # subscribed, not confirmed
        self._changed = asyncio.Event()
        self._rebuild = asyncio.Event()
        self._data_type = "smessage" if self.cluster else "message"

    async def add(self, channels: Sequence[str]) -> None:
        """Subscribe to ``channels`` and return once Redis confirmed it (or after
        :data:`CONFIRM_TIMEOUT_S`): a read of the system of record that follows cannot
        miss what is published after it. SUBSCRIBE goes on the pub/sub connection and
        the read on another, so without the wait Redis may serve the read first, then
        a publish, then the SUBSCRIBE, and that publish is seen by neither."""
        fresh = [c for c in channels if c not in self.wanted]
        if fresh:
            self.wanted.update(fresh)
            loop = asyncio.get_running_loop()
            for channel in fresh:  # before the command: its reply may come at once
                self._confirming.setdefault(channel, loop.create_future())
            try:
                for node, group in self._by_node(fresh).items():
                    sub = self._subs.get(node)
                    if sub is None:  # a node this feed does not hold yet: start over
                        raise _Rebuild(f"no pub/sub connection to {node!r}")
                    await self._subscribe(sub, group)
            except _SUBSCRIBE_FAILED:
                # run() subscribes everything wanted again, confirmed as any (or the
                # wait times out: then on_resubscribe() has the owner catch up)
                self._rebuild_soon()
            self._changed.set()
        # what of ``channels`` is not confirmed yet (by this call or another); gone once it is
        waits = {f for c in channels if (f := self._confirming.get(c)) is not None}
        if waits:
            # shielded: one waiter's timeout or cancellation leaves the others' wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*waits)),
                                       CONFIRM_TIMEOUT_S)

    def _confirmed(self, channels: Iterable[str]) -> None:
        for channel in channels:
            waiter = self._confirming.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def remove(self, channels: Sequence[str]) -> None:
        stale = [c for c in channels if c in self.wanted]
        if not stale:
            return
        self.wanted.difference_update(stale)
        self._dropping.update(stale)
        try:
            for node, group in self._by_node(stale).items():
                sub = self._subs.get(node)
                if sub is None:
                    continue
                if not self.cluster:
                    await sub.unsubscribe(*group)
                    continue
                for channel in group:  # one slot per SUNSUBSCRIBE, as for SSUBSCRIBE
                    await sub.sunsubscribe(channel)
        except _UNSUBSCRIBE_FAILED:
            pass  # a fresh connection will not have them

    async def run(self) -> None:
        backoff = 0.1
        failed = False
        while True:
            self._rebuild.clear()  # what is asked for from here on is done by this round
            try:
                await self._open()
                if failed:  # subscriptions were down (or never up): catch up
                    self.on_resubscribe()
                failed = False
                backoff = 0.1
                await self._read_all()
            except asyncio.CancelledError:
                await self._close()
                raise
            except _CONNECTIONS_LOST as exc:
                log.warning("pub/sub connection lost (%s); resubscribing", type(exc).__name__)
            except Exception:  # noqa: BLE001 - never let the feed die
                log.exception("pub/sub error; resubscribing")
            failed = True
            await self._close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # -- internals --------------------------------------------------------------------

    def _node_of(self, channel: str) -> str:
        if not isinstance(self.r, RedisCluster):
            return ""
        node = self.r.get_node_from_key(channel)
        if node is None:  # (None is for a replica only)
            raise SlotNotCoveredError("the channel's slot has no primary")
        return node.name

    def _by_node(self, channels: Sequence[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for channel in channels:
            groups.setdefault(self._node_of(channel), []).append(channel)
        return groups

    async def _subscribe(self, sub: PubSub, channels: list[str]) -> None:
        if not self.cluster:
            await sub.subscribe(*channels)
            return
        # SSUBSCRIBE takes the channels of one slot only; each user's channel is its own
        # slot (the hash tag), so one command per channel (replies come as messages).
        for channel in channels:
            await sub.ssubscribe(channel)

    async def _open(self) -> None:
        subs: dict[str, PubSub] = {}
        if isinstance(self.r, RedisCluster):
            # a forced refresh of the slot map (RedisCluster.initialize() is a no-op once
            # initialised): after a slot moved, the old map would send SSUBSCRIBE to the
            # old owner again and again
            await self.r.nodes_manager.initialize()
            for primary in self.r.get_primaries():
                client = redis.Redis(host=primary.host, port=int(primary.port),
                                     **_connection_kwargs(self.r))
                self._node_clients.append(client)
                subs[primary.name] = _FeedPubSub(client, self.on_resubscribe)
        else:
            subs[""] = _FeedPubSub(self.r, self.on_resubscribe)
        try:
            for sub in subs.values():
                # connected before anyone may subscribe through it: two first subscribes
                # at once would each open a connection, and one would never be read
                await _typed(sub).connect()
        except BaseException:
            for sub in subs.values():
                with contextlib.suppress(Exception):
                    await _typed(sub).aclose()
            raise
        self._subs = subs
        for node, group in self._by_node(sorted(self.wanted)).items():
            if node not in self._subs:
                raise _Rebuild(f"channel owner {node!r} is not a primary")
            await self._subscribe(self._subs[node], group)

    async def _read_all(self) -> None:
        readers = [asyncio.create_task(self._read(sub), name=f"presence-pubsub-{node}")
                   for node, sub in self._subs.items()]
        rebuild = asyncio.create_task(self._rebuild.wait())
        try:
            done, _ = await asyncio.wait([*readers, rebuild],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a reader only ends by failing
            raise _Rebuild("a subscription could not be made on the current connections")
        finally:
            for task in (*readers, rebuild):
                task.cancel()
            await asyncio.gather(*readers, rebuild, return_exceptions=True)

    async def _read(self, sub: PubSub) -> None:
        data_type, lost = self._data_type, ("sunsubscribe", "unsubscribe")
        confirms = ("ssubscribe", "subscribe")
        while True:
            if not sub.subscribed:
                self._changed.clear()
                await self._changed.wait()
                continue
            message = await sub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if kind == data_type:
                self.on_message(channel, message["data"])
            elif kind in confirms:
                if self._confirming:
                    self._confirmed((channel,))
            elif kind in lost:
                if channel in self._dropping:
                    self._dropping.discard(channel)
                elif channel in self.wanted:
                    # the server dropped a subscription we still want: its slot moved
                    raise _Rebuild(f"subscription dropped by the server ({kind})")

    def _rebuild_soon(self) -> None:
        self._rebuild.set()

    async def _close(self) -> None:
        subs, self._subs = self._subs, {}
        clients, self._node_clients = self._node_clients, []
        self._dropping.clear()
        self._confirmed(list(self._confirming))  # the next connections subscribe them again
        closables: list[_Closable] = [*map(_typed, subs.values()), *clients]
        for closable in closables:
            try:
                await closable.aclose()
            except Exception:  # noqa: BLE001 - closing anyway
                pass


def _typed(sub: PubSub) -> _Connectable:
    """redis-py leaves PubSub.connect() and aclose() unannotated (mypy strict refuses to call
    them); both are coroutines returning None."""
    return cast(_Connectable, sub)


def _connection_kwargs(client: RedisCluster) -> dict[str, Any]:
    """Credentials, TLS and timeouts of a cluster client, for a direct node connection."""
    kwargs = dict(client.connection_kwargs)
    return {k: v for k, v in kwargs.items()
            if k in ("username", "password", "ssl", "ssl_ca_certs", "ssl_certfile",
                     "ssl_keyfile", "ssl_cert_reqs", "socket_connect_timeout",
                     "health_check_interval", "decode_responses")}


# Records a fix unless the user's latest one (me:) is newer, in one step: two devices of a
# user, streaming through two servers, cannot interleave a check and a write.
# KEYS: me, conn, loc. ARGV: the fix as cached, its time, the TTL, "1" if the user shares,
# the publish command, the channel, the message. Returns 1 if recorded, 0 if refused.
_RECORD = """
local latest = redis.call('GET', KEYS[1])
if latest then
  local ok, fix = pcall(cjson.decode, latest)
  if ok and type(fix) == 'table' and tonumber(fix[3])
      and tonumber(ARGV[2]) < tonumber(fix[3]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
  redis.call(ARGV[5], ARGV[6], ARGV[7])
end
return 1
"""


def _locations_unavailable(method: Callable[P, Awaitable[T]]
                           ) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis out of reach becomes the domain's LocationsUnavailable."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            raise LocationsUnavailable() from exc

    return call


class RedisBus:
    def __init__(self, client: RedisClient, namespace: str, ttl_s: int) -> None:
        self.r = client
        self.p = namespace
        self.ttl_s = ttl_s
        self.cluster = is_cluster(client)
        self._record = client.register_script(_RECORD)

    def _key(self, kind: str, user: str) -> str:
        return f"{self.p}{kind}:{{{user}}}"

    def channel(self, user: str) -> str:
        return self._key("ch", user)

    def control(self, user: str) -> str:
        return self._key("ctl", user)

    def _user_of(self, channel: str) -> tuple[str, str]:
        """('ch' | 'ctl', user) of a channel name."""
        rest = channel[len(self.p):]
        kind, _, tagged = rest.partition(":")
        return kind, tagged[1:-1]

    def feed(self, on_event: Callable[[FeedEvent], None],
             on_resubscribe: Callable[[], None] = lambda: None) -> ChannelFeed:
        """The subscriptions, their messages decoded for ``on_event``."""

        def on_message(channel: str, raw: bytes) -> None:
            event = decode_message(*self._user_of(channel), raw)
            if event is not None:
                on_event(event)

        return ChannelFeed(self.r, on_message, on_resubscribe)

    def _publish(self, target: Any, channel: str, message: str) -> Any:
        return target.spublish(channel, message) if self.cluster else \
            target.publish(channel, message)

    @_locations_unavailable
    async def record(self, user: str, fix: Fix, sharing: bool) -> bool:
        """Cache the user's location (and share it) in one round trip (one slot); False,
        with nothing written, if the user's latest location is newer than ``fix``."""
        raw = encode_fix(fix)
        recorded = await self._record(
            keys=[self._key("me", user), self._key("conn", user), self._key("loc", user)],
            args=[raw, repr(fix.t), self.ttl_s, "1" if sharing else "0",
                  "SPUBLISH" if self.cluster else "PUBLISH", self.channel(user),
                  encode_located(raw)])
        return bool(recorded)

    @_locations_unavailable
    async def stream_opened(self, user: str) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.incr(self._key("conn", user))
            pipe.expire(self._key("conn", user), self.ttl_s)
            await pipe.execute()

    @_locations_unavailable
    async def stream_closed(self, user: str) -> int:
        """Streams the user still has anywhere after this one closed."""
        left = int(await self.r.decr(self._key("conn", user)))
        if left <= 0:
            await self.r.delete(self._key("conn", user))
        return left

    @_locations_unavailable
    async def withdraw(self, user: str, reason: Gone) -> None:
        """Forget the user's shared location and tell their friends' servers."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.delete(self._key("loc", user))
            self._publish(pipe, self.channel(user), encode_withdrawn(reason))
            await pipe.execute()

    @_locations_unavailable
    async def shared_locations(self, users: Sequence[str]) -> dict[str, Fix]:
        if not users:
            return {}
        keys = [self._key("loc", u) for u in users]
        values = await (self.r.mget_nonatomic(keys) if isinstance(self.r, RedisCluster)
                        else self.r.mget(keys))
        return {u: decode_fix(v) for u, v in zip(users, values) if v is not None}

    @_locations_unavailable
    async def own_location(self, user: str) -> Fix | None:
        raw = await self.r.get(self._key("me", user))
        return None if raw is None else decode_fix(raw)

    @_locations_unavailable
    async def tell(self, change: Change) -> None:
        await self._publish(self.r, self.control(change.user_id), encode_change(change))
