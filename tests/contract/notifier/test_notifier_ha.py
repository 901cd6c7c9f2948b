"""Two notifier nodes over one etcd, both given the same alerts (as an evaluator posts to
every node): each notification is delivered once, whichever node claims it; silences made
on one node hold on the other; a silence's expiry is noticed once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from geoplex.clients.notifier import NotifierClient, alert, matcher
from geoplex.notifier.v1 import notifier_pb2 as pb

from notifier_hook import HookServer, Received
from notifier_setup import unique
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

pytestmark = pytest.mark.timeout(90)


def claimed_elsewhere(nodes: list[ServerProcess], key: str) -> bool:
    """Whether a node logged that it did not send ``key`` because the other claimed it."""
    return any(f"notification {key} " in line and "claimed by notifier-" in line
               for node in nodes for line in node.log_path.read_text().splitlines())


async def delivered_once(hook: HookServer, nodes: list[ServerProcess], test: str,
                         alertname: str) -> Received:
    """The one request for ``test``'s ``alertname`` group, once the node that lost the
    claim has said so (so a second delivery would have happened by now)."""
    def mine() -> list[Received]:
        return [r for r in hook.received("/hook", label=("test", test))
                if alertname in r.labels("alertname")]

    (first,) = await eventually(mine, 15, what=f"the {alertname} notification")
    key = first.headers["Idempotency-Key"]
    await eventually(lambda: claimed_elsewhere(nodes, key), 15,
                     what="the other node skipping the notification it lost")
    assert mine() == [first]
    return first


async def test_two_nodes_given_the_same_alerts_deliver_each_notification_once(
        nf: NotifierClient, nf2: NotifierClient, hook: HookServer,
        notifiers: list[ServerProcess], delivering: None) -> None:
    test = unique()
    batch = [alert({"alertname": "Replicated", "test": test, "instance": i},
                   starts_at=time.time()) for i in ("a", "b")]
    assert await nf.post_alerts(batch) == 2
    assert await nf2.post_alerts(batch) == 2
    first = await delivered_once(hook, notifiers, test, "Replicated")
    assert first.labels("instance") == ["a", "b"]

    async def logged(client: NotifierClient) -> list[pb.Notification]:
        page = await client.list_notifications("hook", page_size=1000)
        return [n for n in page.notifications if test in n.group_key]

    (one,) = await eventually(lambda: logged(nf), 10, what="the log record")
    assert await logged(nf2) == [one]  # the log is shared: both nodes show the same
    assert one.state == pb.DELIVERY_STATE_DELIVERED and one.node in ("notifier-1",
                                                                     "notifier-2")
    # resolved on both nodes: the resolution is delivered once too
    for posted in batch:
        posted.ends_at.FromNanoseconds(time.time_ns())
    await nf.post_alerts(batch)
    await nf2.post_alerts(batch)

    def resolutions() -> list[Received]:
        return [r for r in hook.received("/hook", label=("test", test))
                if r.body["status"] == "resolved"]

    (resolved,) = await eventually(resolutions, 15, what="the resolution")
    await eventually(lambda: claimed_elsewhere(notifiers, resolved.headers["Idempotency-Key"]),
                     15, what="the other node skipping the resolution")
    assert len(resolutions()) == 1
    assert len(hook.received("/hook", label=("test", test))) == 2


async def test_a_silence_made_on_one_node_holds_on_the_other_and_its_end_is_told_once(
        nf: NotifierClient, nf2: NotifierClient, hook: HookServer,
        notifiers: list[ServerProcess], delivering: None) -> None:
    test = unique()
    silence = await nf.create_silence([matcher("test", "=", test)], ends_at=time.time() + 3,
                                      created_by="alice", comment="failover drill")
    # the other node follows the silences through etcd
    seen = await eventually(lambda: nf2.get_silence(silence.id), 10,
                            what="the silence on node 2")
    assert (seen.created_by, seen.comment) == ("alice", "failover drill")

    async def listed_on_node_2() -> bool:
        page = await nf2.list_silences(f'{{test="{test}"}}')
        return [s.id for s in page.silences] == [silence.id]

    await eventually(listed_on_node_2, 10, what="node 2 listing the silence")
    batch = [alert({"alertname": "Drill", "test": test}, starts_at=time.time())]
    await nf.post_alerts(batch)
    await nf2.post_alerts(batch)
    for client in (nf, nf2):
        listed = await client.list_alerts(f'{{test="{test}"}}', include_suppressed=True)
        assert [list(a.silenced_by) for a in listed.alerts] == [[silence.id]]
    # the silence ends by itself; both nodes notice, one tells
    notice = await delivered_once(hook, notifiers, test, "Drill")
    assert time.time() >= silence.ends_at.seconds
    assert notice.body["status"] == "firing"
    page = await nf2.list_notifications("hook", page_size=1000)
    kinds = [n.kind for n in page.notifications if test in n.group_key]
    assert kinds == [pb.NOTIFICATION_KIND_SILENCE_EXPIRED]
