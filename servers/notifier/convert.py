"""The only place that knows both the notifier's pb2 messages and its domain types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.notifier.v1 import notifier_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.paging import decode_cursor, encode_cursor, page_size
from geoplex.servers._runtime.validate import check_id

from .domain import (
    AlertState,
    ListedAlert,
    Matcher,
    MatcherError,
    MatcherInput,
    MatchType,
    PostedAlert,
    Silence,
    SilenceState,
    check_alert,
    parse_matchers,
    silence_order,
)
from .notification import Kind
from .ports import DeliveryState, NotificationRecord

T = TypeVar("T")
MAX_POSTED = 10_000
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_FILTER = 4096

MATCH_TYPES = {pb.MATCH_TYPE_EQUAL: MatchType.EQUAL, pb.MATCH_TYPE_NOT_EQUAL: MatchType.NOT_EQUAL,
               pb.MATCH_TYPE_REGEX: MatchType.REGEX, pb.MATCH_TYPE_NOT_REGEX: MatchType.NOT_REGEX}
MATCH_TYPES_PB = {kind: number for number, kind in MATCH_TYPES.items()}
ALERT_STATES = {AlertState.ACTIVE: pb.ALERT_STATE_ACTIVE,
                AlertState.SUPPRESSED: pb.ALERT_STATE_SUPPRESSED,
                AlertState.RESOLVED: pb.ALERT_STATE_RESOLVED}
SILENCE_STATES = {SilenceState.PENDING: pb.SILENCE_STATE_PENDING,
                  SilenceState.ACTIVE: pb.SILENCE_STATE_ACTIVE,
                  SilenceState.EXPIRED: pb.SILENCE_STATE_EXPIRED}
KINDS = {Kind.FIRING: pb.NOTIFICATION_KIND_FIRING, Kind.RESOLVED: pb.NOTIFICATION_KIND_RESOLVED,
         Kind.SILENCE_EXPIRED: pb.NOTIFICATION_KIND_SILENCE_EXPIRED}
DELIVERY_STATES = {DeliveryState.DELIVERED: pb.DELIVERY_STATE_DELIVERED,
                   DeliveryState.RETRYING: pb.DELIVERY_STATE_RETRYING,
                   DeliveryState.FAILED: pb.DELIVERY_STATE_FAILED}


def timestamp(seconds: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


# -- alerts --------------------------------------------------------------------------------

def posted_alerts(request: pb.PostAlertsRequest) -> list[PostedAlert]:
    """The request's alerts, each checked (InvalidArgument naming ``alerts[i]...``)."""
    if len(request.alerts) > MAX_POSTED:
        raise InvalidArgument("alerts", f"{len(request.alerts)} alerts in one request",
                              allowed=[f"at most {MAX_POSTED}"])
    out = []
    for i, alert in enumerate(request.alerts):
        posted = PostedAlert(
            labels=dict(alert.labels), annotations=dict(alert.annotations),
            starts_at=seconds(alert.starts_at) if alert.HasField("starts_at") else None,
            ends_at=seconds(alert.ends_at) if alert.HasField("ends_at") else None,
            generator_url=alert.generator_url)
        check_alert(posted, f"alerts[{i}]")
        out.append(posted)
    return out


def filter_matchers(text: str, field: str = "filter") -> list[Matcher]:
    """A selector such as ``{severity="page", service=~"api|maps"}`` (empty: none)."""
    if len(text) > MAX_FILTER:
        raise InvalidArgument(field, f"is {len(text)} characters long",
                              allowed=[f"at most {MAX_FILTER}"])
    try:
        return parse_matchers(text)
    except MatcherError as exc:
        raise InvalidArgument(field, f"{exc}; expected matchers such as "
                              "{severity=\"page\", service=~\"api|maps\"}",
                              reason="INVALID_FILTER") from None


def listed_alert_to_pb(listed: ListedAlert) -> pb.ListedAlert:
    alert = listed.alert
    message = pb.Alert(labels=dict(alert.labels), annotations=dict(alert.annotations),
                       starts_at=timestamp(alert.starts_at), generator_url=alert.generator_url)
    if listed.state is AlertState.RESOLVED or not alert.timeout:
        message.ends_at.CopyFrom(timestamp(alert.ends_at))
    return pb.ListedAlert(alert=message, fingerprint=alert.fingerprint,
                          state=ALERT_STATES[listed.state], silenced_by=list(listed.silenced_by),
                          inhibited_by=list(listed.inhibited_by),
                          receivers=list(listed.receivers))


def alerts_page(request: pb.ListAlertsRequest, found: Sequence[ListedAlert]
                ) -> pb.ListAlertsResponse:
    scope = f"alerts\x00{request.filter}\x00{request.include_suppressed}\x00" \
            f"{request.include_resolved}"
    items, token = paginate(found, lambda a: (0.0, a.alert.fingerprint), request.page_size,
                            request.page_token, scope)
    return pb.ListAlertsResponse(alerts=[listed_alert_to_pb(a) for a in items],
                                 next_page_token=token)


# -- silences ------------------------------------------------------------------------------

def matcher_inputs(matchers: Sequence[pb.Matcher]) -> list[MatcherInput]:
    return [MatcherInput(m.name, m.value, MATCH_TYPES.get(m.type)) for m in matchers]


def silence_to_pb(s: Silence, now: float) -> pb.Silence:
    return pb.Silence(
        id=s.id, matchers=[pb.Matcher(name=m.name, value=m.value, type=MATCH_TYPES_PB[m.type])
                           for m in s.matchers],
        starts_at=timestamp(s.starts_at), ends_at=timestamp(s.ends_at),
        created_by=s.created_by, comment=s.comment, state=SILENCE_STATES[s.state(now)],
        updated_at=timestamp(s.updated_at), expired_by=s.expired_by,
        expire_comment=s.expire_comment)


def silence_id(value: str, field: str = "id") -> str:
    return check_id(field, value)


def silences_page(request: pb.ListSilencesRequest, found: Sequence[Silence], now: float
                  ) -> pb.ListSilencesResponse:
    scope = f"silences\x00{request.filter}\x00{request.include_expired}"

    def key(s: Silence) -> tuple[float, str]:
        rank, at, ident = silence_order(s, now)
        return rank * 1e12 + at, ident

    ordered = sorted(found, key=key)
    items, token = paginate(ordered, key, request.page_size, request.page_token, scope)
    return pb.ListSilencesResponse(silences=[silence_to_pb(s, now) for s in items],
                                   next_page_token=token)


# -- the notification log ------------------------------------------------------------------

def record_to_pb(record: NotificationRecord) -> pb.Notification:
    return pb.Notification(
        id=record.id, receiver=record.receiver, integration=record.integration,
        group_key=record.group_key, kind=KINDS[record.kind],
        alert_fingerprints=list(record.fingerprints), created_at=timestamp(record.created_at),
        state=DELIVERY_STATES[record.state], attempts=record.attempts, error=record.error,
        node=record.node)


def receiver_filter(value: str) -> str:
    if value and (len(value) > 256 or not value.isprintable()):
        raise InvalidArgument("receiver", "must be a receiver's name (1..256 printable "
                              "characters) or empty for all")
    return value


def notifications_page(request: pb.ListNotificationsRequest,
                       newest_first: Sequence[NotificationRecord]
                       ) -> pb.ListNotificationsResponse:
    """Newest first; the cursor is the last record's id (ids sort by time)."""
    scope = f"notifications\x00{request.receiver}"
    items, token = paginate(newest_first, lambda r: (0.0, r.id), request.page_size,
                            request.page_token, scope, descending=True)
    return pb.ListNotificationsResponse(notifications=[record_to_pb(r) for r in items],
                                        next_page_token=token)


# -- pages ---------------------------------------------------------------------------------

def paginate(items: Sequence[T], key: Callable[[T], tuple[float, str]], size: int, token: str,
             scope: str, *, descending: bool = False) -> tuple[list[T], str]:
    """One page of ``items`` (already in order of ``key``, ascending unless
    ``descending``) after the page ``token`` names, and the next page's token."""
    limit = page_size(size, DEFAULT_PAGE, MAX_PAGE)
    start = 0
    if token:
        cursor = decode_cursor(token, scope)
        start = len(items)
        for i, item in enumerate(items):
            k = key(item)
            if (k < cursor) if descending else (k > cursor):
                start = i
                break
    page = list(items[start:start + limit])
    more = start + limit < len(items)
    if not more or not page:
        return page, ""
    position, last = key(page[-1])
    return page, encode_cursor(position, last, scope)
