"""``geoplex notifier ...``: the alerts a notifier holds, silences, and the notification log.

:func:`add_commands` makes ``geoplex notifier alerts|silences|silence-add|silence-expire|
notifications``; :func:`add_silence_commands` registers the silence and notification
commands on another command group too (``geoplex telemetry silences`` ...).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import time
from collections.abc import Callable
from functools import partial

from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.clients.channel import ChannelOptions
from geoplex.clients.notifier import NotifierClient, matcher
from geoplex.notifier.v1 import notifier_pb2 as pb

from .commands import Subcommands, call, command_group
from .output import print_error, print_next_page, print_table, printable

DEFAULT_TARGET = os.environ.get("GEOPLEX_NOTIFIER_TARGET", "127.0.0.1:50057").split(",")[0]


def _connect(args: argparse.Namespace) -> Callable[[], NotifierClient]:
    return partial(NotifierClient, args.notifier_target, ChannelOptions())


def _when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime().isoformat(timespec="seconds") + "Z"


def _name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


_OPERATORS: dict[int, str] = {pb.MATCH_TYPE_EQUAL: "=", pb.MATCH_TYPE_NOT_EQUAL: "!=",
                              pb.MATCH_TYPE_REGEX: "=~", pb.MATCH_TYPE_NOT_REGEX: "!~"}


def _op(kind: int) -> str:
    return _OPERATORS.get(kind, "?")


def _matchers_text(silence: pb.Silence) -> str:
    return ", ".join(f'{m.name}{_op(m.type)}"{m.value}"' for m in silence.matchers)


def _labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")


def cmd_alerts(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda nf: nf.list_alerts(
        args.filter, include_suppressed=args.all, include_resolved=args.resolved,
        page_size=args.limit, page_token=args.page_token))
    rows = []
    for listed in page.alerts:
        labels = dict(listed.alert.labels)
        muted = [f"silence {s}" for s in listed.silenced_by] + \
            [f"alert {f}" for f in listed.inhibited_by]
        rows.append((labels.get("alertname", "-"), _labels_text(labels),
                     _name(pb.AlertState.Name(listed.state), "ALERT_STATE_"),
                     _when(listed.alert.starts_at), ", ".join(listed.receivers) or "-",
                     ", ".join(muted) or "-", listed.fingerprint))
    print_table(("alert", "labels", "state", "since", "receivers", "muted by", "fingerprint"),
                rows)
    if not page.alerts:
        print("no alerts" + ("" if args.all else " (--all: silenced and inhibited ones too)"))
    print_next_page(page.next_page_token)
    return 0


def cmd_silences(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda nf: nf.list_silences(
        args.filter, include_expired=args.expired, page_size=args.limit,
        page_token=args.page_token))
    print_table(("id", "state", "matchers", "starts", "ends", "created by", "comment"),
                [(s.id, _name(pb.SilenceState.Name(s.state), "SILENCE_STATE_"), _matchers_text(s),
                  _when(s.starts_at), _when(s.ends_at), s.created_by, s.comment)
                 for s in page.silences])
    if not page.silences:
        print("no silences" + ("" if args.expired else " (--expired: ended ones too)"))
    print_next_page(page.next_page_token)
    return 0


def _parse_time(text: str, flag: str) -> float:
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected an ISO 8601 time such as "
                         "2025-06-01T18:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def cmd_silence_add(args: argparse.Namespace) -> int:
    from geoplex.servers.notifier.domain import MatcherError, parse_duration, parse_matchers

    try:
        parsed = [m for text in args.matchers for m in parse_matchers(text)]
        starts = _parse_time(args.start, "--start") if args.start else time.time()
        if args.until:
            ends = _parse_time(args.until, "--until")
        else:
            ends = starts + parse_duration(args.duration)
    except (MatcherError, ValueError) as exc:
        return print_error(exc)
    matchers = [matcher(m.name, m.type.value, m.value) for m in parsed]
    silence = call(_connect(args), lambda nf: nf.create_silence(
        matchers, ends_at=ends, starts_at=starts if args.start else None,
        created_by=args.author, comment=args.comment))
    print(f"silence {printable(silence.id)} "
          f"{_name(pb.SilenceState.Name(silence.state), 'SILENCE_STATE_')} until "
          f"{_when(silence.ends_at)}: {printable(_matchers_text(silence))}")
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    silence = call(_connect(args), lambda nf: nf.expire_silence(
        args.id, expired_by=args.by, comment=args.comment))
    print(f"silence {printable(silence.id)} expired at {_when(silence.ends_at)}")
    return 0


def cmd_notifications(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda nf: nf.list_notifications(
        args.receiver, page_size=args.limit, page_token=args.page_token))
    print_table(("sent", "receiver", "integration", "kind", "state", "attempts", "alerts",
                 "node", "error"),
                [(_when(n.created_at), n.receiver, n.integration,
                  _name(pb.NotificationKind.Name(n.kind), "NOTIFICATION_KIND_"),
                  _name(pb.DeliveryState.Name(n.state), "DELIVERY_STATE_"), n.attempts,
                  len(n.alert_fingerprints), n.node, n.error or "-")
                 for n in page.notifications])
    if not page.notifications:
        print("no notifications yet")
    print_next_page(page.next_page_token)
    return 0


def _target(p: argparse.ArgumentParser, flag: str) -> None:
    p.add_argument(flag, dest="notifier_target", default=DEFAULT_TARGET, metavar="HOST:PORT",
                   help="a notifier node (default: %(default)s; any node answers the same "
                   "silences and log)")


def _page(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--limit", type=int, default=0, help=f"{what} per page, 1..1000 "
                   "(default 100)")
    p.add_argument("--page-token", default="", help="the next page of an earlier listing")


def add_silence_commands(group: Subcommands, *, target_flag: str = "--target") -> None:
    """``silences``, ``silence-add``, ``silence-expire`` and ``notifications`` on
    ``group`` (``target_flag`` names the option giving the notifier's address)."""
    s = group.add_parser("silences", help="the silences: who muted what, until when",
                         description="List the active and pending silences (--expired: the "
                         "ended ones too), active ones ending soonest first.")
    s.add_argument("--filter", default="", metavar="SELECTOR",
                   help="only silences whose matchers fit, e.g. '{service=\"api\"}'")
    s.add_argument("--expired", action="store_true", help="include expired silences")
    _page(s, "silences")
    _target(s, target_flag)
    s.set_defaults(func=cmd_silences)

    a = group.add_parser("silence-add", help="mute the alerts some matchers select",
                         description="Create a silence: alerts matched by every MATCHER "
                         "(name=value, name!=value, name=~regex, name!~regex; quote values "
                         "with spaces) are not notified until it ends. When it ends while "
                         "they still fire, their receivers are told.")
    a.add_argument("matchers", nargs="+", metavar="MATCHER",
                   help="e.g. alertname=HighLatency 'instance=~\"web-.*\"'")
    a.add_argument("--duration", default="2h", help="how long, e.g. 30m, 2h, 1d "
                   "(default: %(default)s)")
    a.add_argument("--until", default="", metavar="TIME",
                   help="when it ends instead, ISO 8601 (UTC without a zone)")
    a.add_argument("--start", default="", metavar="TIME",
                   help="when it starts, ISO 8601 (default: now)")
    a.add_argument("--comment", required=True, help="why (required)")
    a.add_argument("--author", default=os.environ.get("USER") or getpass.getuser(),
                   help="who silences (default: %(default)s)")
    _target(a, target_flag)
    a.set_defaults(func=cmd_silence_add)

    e = group.add_parser("silence-expire", help="end a silence now",
                         description="Expire the silence ID now; its alerts are notified "
                         "again, and their receivers told that the silence ended.")
    e.add_argument("id", help="the silence's id (see `silences`)")
    e.add_argument("--by", default=os.environ.get("USER") or getpass.getuser(),
                   help="who ends it (default: %(default)s)")
    e.add_argument("--comment", default="", help="why it ends early")
    _target(e, target_flag)
    e.set_defaults(func=cmd_silence_expire)

    n = group.add_parser("notifications", help="the notification log: what was sent to whom",
                         description="List the notifications sent (or failing), newest "
                         "first: receiver, channel, kind, delivery state, attempts, the node "
                         "that sent it and the last error.")
    n.add_argument("--receiver", default="", help="only this receiver's")
    _page(n, "notifications")
    _target(n, target_flag)
    n.set_defaults(func=cmd_notifications)


def add_commands(sub: Subcommands) -> None:
    group = command_group(
        sub, "notifier", help="alert notifications: alerts, silences, the notification log",
        description="Call NotifierService: the alerts a node holds and what mutes them, "
        "silences (list, add, expire) and the notification log.")
    al = group.add_parser("alerts", help="the alerts a notifier node holds",
                          description="List the firing alerts (--all: silenced and "
                          "inhibited ones too; --resolved: resolved ones), with their "
                          "receivers and what mutes them.")
    al.add_argument("--filter", default="", metavar="SELECTOR",
                    help="e.g. '{severity=\"page\", service=~\"api|maps\"}'")
    al.add_argument("--all", action="store_true", help="include silenced and inhibited alerts")
    al.add_argument("--resolved", action="store_true", help="include resolved alerts")
    _page(al, "alerts")
    _target(al, "--target")
    al.set_defaults(func=cmd_alerts)
    add_silence_commands(group)
