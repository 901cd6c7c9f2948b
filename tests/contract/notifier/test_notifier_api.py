"""NotifierService on a real notifier process, called through the SDK, delivering to an
in-test webhook receiver: group_wait, repeat_interval and resolution; grouping;
inhibition; silences and the notice of their expiry; bad silences refused with nothing
stored; the notification log."""

from __future__ import annotations

import time

import grpc
import pytest

from geoplex.clients.errors import InvalidArgumentError, NotFoundError
from geoplex.clients.notifier import NotifierClient, alert, matcher
from geoplex.notifier.v1 import notifier_pb2 as pb

from notifier_hook import HookServer, Received
from notifier_setup import GROUP_WAIT_S, REPEAT_S, RETRY_ATTEMPTS, unique
from polling import eventually

pytestmark = pytest.mark.timeout(90)
EPS = 0.05  # the receiver's clock and the test's are one; allow for rounding only


async def requests(hook: HookServer, test: str, count: int, timeout: float = 15.0,
                   path: str = "/hook") -> list[Received]:
    """The requests for ``test`` once there are (at least) ``count`` of them."""
    def enough() -> list[Received]:
        found = hook.received(path, label=("test", test))
        return found if len(found) >= count else []

    return await eventually(enough, timeout, what=f"{count} webhook request(s) for {test}")


async def test_a_group_notifies_once_after_group_wait_and_again_when_resolved(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    start = time.time()
    posted = time.monotonic()
    batch = [alert({"alertname": "HighLatency", "test": test, "instance": i},
                   {"summary": f"p99 high on {i}"}, starts_at=start) for i in ("a", "b")]
    assert await nf.post_alerts(batch) == 2
    (first,) = await requests(hook, test, 1)
    assert first.at >= posted + GROUP_WAIT_S - EPS  # not before group_wait
    body = first.body
    assert (body["version"], body["status"], body["receiver"]) == ("4", "firing", "hook")
    assert body["groupLabels"] == {"alertname": "HighLatency", "test": test}
    assert first.labels("instance") == ["a", "b"]
    assert [a["status"] for a in first.alerts] == ["firing", "firing"]
    assert first.headers["Idempotency-Key"]

    resolved_at = time.time()
    await nf.post_alerts([alert({"alertname": "HighLatency", "test": test, "instance": i},
                                starts_at=start, ends_at=resolved_at) for i in ("a", "b")])
    found = await requests(hook, test, 2)
    assert len(found) == 2  # the first group flush and the resolution, nothing between
    last = found[1].body
    assert last["status"] == "resolved"
    assert [a["status"] for a in last["alerts"]] == ["resolved", "resolved"]
    listed = await nf.list_alerts(f'{{test="{test}"}}', include_resolved=True)
    assert {a.state for a in listed.alerts} == {pb.ALERT_STATE_RESOLVED}


async def test_an_unchanged_group_is_notified_again_after_repeat_interval(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    start = time.time()
    await nf.post_alerts([alert({"alertname": "DiskFull", "test": test,
                                 "scenario": "repeat"}, starts_at=start)])
    first, second = (await requests(hook, test, 2, timeout=20.0))[:2]
    assert second.at - first.at >= REPEAT_S - EPS
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert second.body["alerts"] == first.body["alerts"]
    await nf.post_alerts([alert({"alertname": "DiskFull", "test": test, "scenario": "repeat"},
                                starts_at=start, ends_at=time.time())])  # stop the repeats


async def test_alerts_are_grouped_by_the_routes_group_by_labels(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    now = time.time()
    await nf.post_alerts([alert({"alertname": "A", "test": test, "instance": "1"}, starts_at=now),
                          alert({"alertname": "A", "test": test, "instance": "2"}, starts_at=now),
                          alert({"alertname": "B", "test": test, "instance": "1"}, starts_at=now)])
    found = await requests(hook, test, 2)
    by_group = {r.body["groupLabels"]["alertname"]: r.labels("instance") for r in found}
    assert by_group == {"A": ["1", "2"], "B": ["1"]}
    assert all(r.body["commonLabels"]["test"] == test for r in found)


async def test_a_firing_critical_alert_inhibits_warnings_of_its_cluster(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    now = time.time()
    await nf.post_alerts([
        alert({"alertname": "ClusterDown", "severity": "critical", "cluster": "x",
               "test": test}, starts_at=now),
        alert({"alertname": "Slow", "severity": "warning", "cluster": "x", "test": test},
              starts_at=now),
        alert({"alertname": "Slow", "severity": "warning", "cluster": "y", "test": test},
              starts_at=now)])
    found = await requests(hook, test, 2)
    by_group = {r.body["groupLabels"]["alertname"]: r.labels("cluster") for r in found}
    assert by_group == {"ClusterDown": ["x"], "Slow": ["y"]}
    listed = await nf.list_alerts(f'{{test="{test}", alertname="Slow"}}',
                                  include_suppressed=True)
    states = {dict(a.alert.labels)["cluster"]: a for a in listed.alerts}
    down = (await nf.list_alerts(f'{{test="{test}", alertname="ClusterDown"}}')).alerts[0]
    assert states["x"].state == pb.ALERT_STATE_SUPPRESSED
    assert list(states["x"].inhibited_by) == [down.fingerprint]
    assert states["y"].state == pb.ALERT_STATE_ACTIVE
    assert list(states["y"].receivers) == ["hook"]
    active_only = await nf.list_alerts(f'{{test="{test}"}}')
    assert len(active_only.alerts) == 2


async def test_a_silence_mutes_its_alerts_and_its_expiry_tells_the_receiver(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    silence = await nf.create_silence(
        [matcher("test", "=", test), matcher("alertname", "=~", "Muted|AlsoMuted")],
        ends_at=time.time() + 3600, created_by="alice", comment="replacing the disk")
    assert silence.state == pb.SILENCE_STATE_ACTIVE and silence.id
    now = time.time()
    await nf.post_alerts([alert({"alertname": "Muted", "test": test}, starts_at=now),
                          alert({"alertname": "Control", "test": test}, starts_at=now)])
    (control,) = await requests(hook, test, 1)  # the muted group flushed at the same time
    assert control.body["groupLabels"]["alertname"] == "Control"
    listed = await nf.list_alerts(f'{{test="{test}", alertname="Muted"}}',
                                  include_suppressed=True)
    assert [list(a.silenced_by) for a in listed.alerts] == [[silence.id]]
    assert listed.alerts[0].state == pb.ALERT_STATE_SUPPRESSED
    # both groups were flushed in the same pass, before Control was sent: Muted sent nothing
    assert [r.body["groupLabels"]["alertname"]
            for r in hook.received("/hook", label=("test", test))] == ["Control"]

    expired = await nf.expire_silence(silence.id, expired_by="bob", comment="disk replaced")
    assert (expired.state, expired.expired_by, expired.expire_comment) == (
        pb.SILENCE_STATE_EXPIRED, "bob", "disk replaced")
    found = await requests(hook, test, 2)
    notice = found[1]
    assert notice.labels("alertname") == ["Muted"] and notice.body["status"] == "firing"
    assert [r for r in found if "Muted" in r.labels("alertname")] == [notice]

    async def logged() -> list[pb.Notification]:
        page = await nf.list_notifications("hook", page_size=1000)
        return [n for n in page.notifications if f'alertname="Muted"' in n.group_key
                and test in n.group_key]

    (record,) = await eventually(logged, 10, what="the expiry notice in the log")
    assert record.kind == pb.NOTIFICATION_KIND_SILENCE_EXPIRED  # the only one for Muted
    assert record.state == pb.DELIVERY_STATE_DELIVERED
    again = await nf.expire_silence(silence.id, expired_by="carol")  # idempotent
    assert again.ends_at == expired.ends_at and again.expired_by == "bob"


@pytest.mark.parametrize(("matchers", "field", "reason"), [
    ([], "silence.matchers", "REQUIRED_FIELD"),
    ([("env", "=", "")], "silence.matchers", "MATCHES_EVERYTHING"),
    ([("env", "=~", ".*"), ("team", "!=", "x")], "silence.matchers", "MATCHES_EVERYTHING"),
    ([("env", "=~", "(unclosed")], "silence.matchers[0].value", "INVALID_REGEX"),
    ([("1bad", "=", "x")], "silence.matchers[0].name", "INVALID_ARGUMENT"),
])
async def test_bad_silence_matchers_are_refused_and_nothing_is_stored(
        nf: NotifierClient, matchers: list[tuple[str, str, str]], field: str,
        reason: str) -> None:
    before = await nf.list_silences(include_expired=True, page_size=1000)
    with pytest.raises(InvalidArgumentError) as caught:
        await nf.create_silence([matcher(*m) for m in matchers], ends_at=time.time() + 60,
                                created_by="alice", comment="why")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.metadata.get("field"), caught.value.reason) == (field, reason)
    assert field in caught.value.message
    after = await nf.list_silences(include_expired=True, page_size=1000)
    assert len(after.silences) == len(before.silences)


async def test_an_unspecified_match_type_is_refused_naming_the_allowed_ones(
        nf: NotifierClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await nf.create_silence([pb.Matcher(name="a", value="b")], ends_at=time.time() + 60,
                                created_by="alice", comment="why")
    assert caught.value.metadata["field"] == "silence.matchers[0].type"
    assert "MATCH_TYPE_EQUAL" in caught.value.metadata["allowed"]


@pytest.mark.parametrize(("offsets", "by", "comment", "field"), [
    ((30, 10), "alice", "why", "silence.ends_at"),      # ends before it starts
    ((-60, -30), "alice", "why", "silence.ends_at"),    # ended already
    ((None, 60), "", "why", "silence.created_by"),
    ((None, 60), "alice", "", "silence.comment"),
])
async def test_bad_silence_times_or_a_missing_author_or_comment_are_refused(
        nf: NotifierClient, offsets: tuple[float | None, float], by: str, comment: str,
        field: str) -> None:
    now = time.time()
    starts = None if offsets[0] is None else now + offsets[0]
    with pytest.raises(InvalidArgumentError) as caught:
        await nf.create_silence([matcher("alertname", "=", "X")], starts_at=starts,
                                ends_at=now + offsets[1], created_by=by, comment=comment)
    assert caught.value.metadata["field"] == field


async def test_an_unknown_silence_is_not_found(nf: NotifierClient) -> None:
    with pytest.raises(NotFoundError):
        await nf.get_silence("0" * 32)
    with pytest.raises(NotFoundError):
        await nf.expire_silence("0" * 32, expired_by="bob")
    with pytest.raises(InvalidArgumentError) as caught:
        await nf.get_silence("")
    assert caught.value.metadata["field"] == "id"


async def test_silences_are_listed_by_state_and_filtered_by_their_matchers(
        nf: NotifierClient) -> None:
    test = unique()
    now = time.time()
    later = await nf.create_silence([matcher("test", "=", test), matcher("svc", "=", "api")],
                                    starts_at=now + 600, ends_at=now + 1200,
                                    created_by="alice", comment="planned")
    soon = await nf.create_silence([matcher("test", "=", test), matcher("svc", "=", "maps")],
                                   ends_at=now + 300, created_by="alice", comment="now")
    assert later.state == pb.SILENCE_STATE_PENDING
    assert (await nf.get_silence(soon.id)).comment == "now"
    listed = await nf.list_silences(f'{{test="{test}"}}')
    assert [s.id for s in listed.silences] == [soon.id, later.id]  # active, then pending
    only_api = await nf.list_silences(f'{{test="{test}", svc="api"}}')
    assert [s.id for s in only_api.silences] == [later.id]
    first = await nf.list_silences(f'{{test="{test}"}}', page_size=1)
    assert [s.id for s in first.silences] == [soon.id] and first.next_page_token
    rest = await nf.list_silences(f'{{test="{test}"}}', page_size=1,
                                  page_token=first.next_page_token)
    assert [s.id for s in rest.silences] == [later.id] and not rest.next_page_token
    await nf.expire_silence(soon.id, expired_by="alice")
    assert [s.id for s in (await nf.list_silences(f'{{test="{test}"}}')).silences] == [later.id]
    with_expired = await nf.list_silences(f'{{test="{test}"}}', include_expired=True)
    assert [s.state for s in with_expired.silences] == [pb.SILENCE_STATE_PENDING,
                                                        pb.SILENCE_STATE_EXPIRED]
    with pytest.raises(InvalidArgumentError) as caught:
        await nf.list_silences('{test=~"("}')
    assert caught.value.metadata["field"] == "filter"


async def test_bad_alerts_are_refused_naming_the_field(nf: NotifierClient) -> None:
    cases = [(alert({}), "alerts[0].labels"),
             (alert({"bad-name": "x"}), "alerts[0].labels"),
             (alert({"alertname": "A", "x": "\x1b[2J"}), "alerts[0].labels[x]"),
             (alert({"alertname": "A"}, starts_at=200.0, ends_at=100.0), "alerts[0].ends_at")]
    for bad, field in cases:
        with pytest.raises(InvalidArgumentError) as caught:
            await nf.post_alerts([bad])
        assert caught.value.metadata["field"] == field


async def test_the_notification_log_shows_what_was_sent_to_whom(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test = unique()
    await nf.post_alerts([alert({"alertname": "Logged", "test": test}, starts_at=time.time())])
    await requests(hook, test, 1)

    async def mine(receiver: str = "") -> list[pb.Notification]:
        page = await nf.list_notifications(receiver, page_size=1000)
        return [n for n in page.notifications if test in n.group_key]

    (record,) = await eventually(mine, 10, what="the log record")
    assert (record.receiver, record.integration, record.kind, record.state, record.attempts,
            record.node) == ("hook", "webhook", pb.NOTIFICATION_KIND_FIRING,
                             pb.DELIVERY_STATE_DELIVERED, 1, "notifier-1")
    listed = await nf.list_alerts(f'{{test="{test}"}}')
    assert list(record.alert_fingerprints) == [listed.alerts[0].fingerprint]
    assert await mine("broken") == []
    newest = await nf.list_notifications(page_size=1)
    assert len(newest.notifications) == 1 and newest.next_page_token
    following = await nf.list_notifications(page_size=1, page_token=newest.next_page_token)
    assert following.notifications[0].created_at.ToNanoseconds() <= \
        newest.notifications[0].created_at.ToNanoseconds()
    with pytest.raises(InvalidArgumentError):
        await nf.list_notifications(page_token="bogus")


async def test_failed_deliveries_are_retried_then_logged_as_failed(
        nf: NotifierClient, hook: HookServer, delivering: None) -> None:
    test_broken, test_refused = unique(), unique()
    now = time.time()
    batch = [alert({"alertname": "X", "test": test_broken, "scenario": "broken"}, starts_at=now),
             alert({"alertname": "X", "test": test_refused, "scenario": "refused"},
                   starts_at=now)]
    await nf.post_alerts(batch)

    async def final(receiver: str, test: str) -> pb.Notification | None:
        page = await nf.list_notifications(receiver, page_size=1000)
        done = [n for n in page.notifications if test in n.group_key
                and n.state == pb.DELIVERY_STATE_FAILED]
        return done[-1] if done else None  # the oldest: the first notification's record

    broken = await eventually(lambda: final("broken", test_broken), 15,
                              what="the 503 receiver's failure")
    assert broken is not None and broken.attempts == RETRY_ATTEMPTS and "503" in broken.error
    assert len(hook.received("/broken", label=("test", test_broken))) >= RETRY_ATTEMPTS
    refused = await eventually(lambda: final("refused", test_refused), 15,
                               what="the 400 receiver's failure")
    assert refused is not None and refused.attempts == 1 and "400" in refused.error  # not retryable
    for posted in batch:  # resolved before anything was delivered: the groups just end
        posted.ends_at.FromNanoseconds(time.time_ns())
    await nf.post_alerts(batch)
