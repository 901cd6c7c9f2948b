"""Text every channel shares: Alertmanager's default subject, the alert listings of the
email bodies and PagerDuty's details, RFC 3339 times. Pure functions of a Notification.

The subject follows Alertmanager's ``__subject`` template::

    [FIRING:2] HighErrorRatio (api)

status (with the number firing), the group labels' values sorted by label name, then in
parentheses the values of the common labels that are not group labels.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime

from ..notification import Kind, NotifiedAlert, Notification

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Alertmanager sends it


def rfc3339(seconds: float | None) -> str:
    """Seconds since the epoch as RFC 3339 in UTC, fractions as Go's RFC3339Nano writes
    them (trailing zeros dropped); None is Go's zero time."""
    if seconds is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, its last one "…" when cut (Alertmanager's
    TruncateInRunes)."""
    if len(text) <= limit:
        return text, False
    return text[:limit - 1] + "…", True


def firing(n: Notification) -> list[NotifiedAlert]:
    return [alert for alert in n.alerts if alert.status == "firing"]


def resolved(n: Notification) -> list[NotifiedAlert]:
    return [alert for alert in n.alerts if alert.status != "firing"]


def _values(labels: Mapping[str, str]) -> str:
    return " ".join(labels[name] for name in sorted(labels))


def group_title(n: Notification) -> str:
    """``HighErrorRatio (api)``: group label values, then the other common ones."""
    title = _values(n.group_labels)
    rest = {k: v for k, v in n.common_labels.items() if k not in n.group_labels}
    if rest:
        title = f"{title} ({_values(rest)})" if title else f"({_values(rest)})"
    return title


def subject(n: Notification) -> str:
    """Alertmanager's default subject; for an expired silence it says so."""
    title = group_title(n)
    if n.kind is Kind.SILENCE_EXPIRED:
        count = len(firing(n))
        silence = n.silence.get("id", "?")
        head = f"[SILENCE EXPIRED] {title}" if title else "[SILENCE EXPIRED]"
        return (f"{head}: silence {silence} ended, "
                f"{count} alert{'s' if count != 1 else ''} still firing")
    status = n.status.upper()
    if n.status == "firing":
        status += f":{len(firing(n))}"
    return f"[{status}] {title}".rstrip()


def _pairs(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(name, labels[name]) for name in sorted(labels)]


def alert_text(alert: NotifiedAlert) -> str:
    """One alert: labels, annotations, start (and end), source; Alertmanager's
    ``pagerduty.default.instances`` layout."""
    lines = ["Labels:"]
    lines += [f" - {name} = {value}" for name, value in _pairs(alert.labels)]
    if alert.annotations:
        lines.append("Annotations:")
        lines += [f" - {name} = {value}" for name, value in _pairs(alert.annotations)]
    lines.append(f"Started: {rfc3339(alert.starts_at)}")
    if alert.ends_at is not None:
        lines.append(f"Ended: {rfc3339(alert.ends_at)}")
    if alert.generator_url:
        lines.append(f"Source: {alert.generator_url}")
    return "\n".join(lines) + "\n"


def alerts_text(alerts: list[NotifiedAlert]) -> str:
    return "\n".join(alert_text(alert) for alert in alerts)


def silence_lines(n: Notification) -> list[str]:
    """Which silence expired: id, created_by, comment, then any other fields it has."""
    silence = n.silence
    lines = [f"Silence {silence.get('id', '?')} expired.",
             f"Created by: {silence.get('created_by', '') or 'unknown'}",
             f"Comment: {silence.get('comment', '')}"]
    lines += [f"{name.replace('_', ' ').capitalize()}: {silence[name]}"
              for name in sorted(silence) if name not in ("id", "created_by", "comment")]
    return lines


def text_body(n: Notification, external_url: str = "") -> str:
    """The plain-text email body."""
    out = [subject(n), ""]
    if n.kind is Kind.SILENCE_EXPIRED:
        out += silence_lines(n)
        out += ["", "The alerts it muted still fire; they are no longer silenced.", ""]
    on = firing(n)
    off = resolved(n)
    if on:
        out += [f"Firing ({len(on)})", "", alerts_text(on)]
    if off:
        out += [f"Resolved ({len(off)})", "", alerts_text(off)]
    if n.truncated_alerts:
        out += [f"... and {n.truncated_alerts} more alerts not listed.", ""]
    url = n.external_url or external_url
    if url:
        out += [f"Sent by the Geoplex notifier, receiver {n.receiver}: {url}", ""]
    else:
        out += [f"Sent by the Geoplex notifier, receiver {n.receiver}.", ""]
    return "\n".join(out)


def _alert_html(alert: NotifiedAlert) -> str:
    esc = html.escape
    rows = "".join(f"<li>{esc(k)} = {esc(v)}</li>" for k, v in _pairs(alert.labels))
    parts = [f"<p><b>Labels</b></p><ul>{rows}</ul>"]
    if alert.annotations:
        rows = "".join(f"<li>{esc(k)} = {esc(v)}</li>" for k, v in _pairs(alert.annotations))
        parts.append(f"<p><b>Annotations</b></p><ul>{rows}</ul>")
    times = f"Started: {rfc3339(alert.starts_at)}"
    if alert.ends_at is not None:
        times += f"<br>Ended: {rfc3339(alert.ends_at)}"
    parts.append(f"<p>{times}</p>")
    if alert.generator_url:
        url = esc(alert.generator_url, quote=True)
        parts.append(f'<p><a href="{url}">Source</a></p>')
    return "<div>" + "".join(parts) + "</div><hr>"


def html_body(n: Notification, external_url: str = "") -> str:
    """A simple HTML email body: the same content as :func:`text_body`."""
    esc = html.escape
    out = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
           f"<title>{esc(subject(n))}</title></head><body>",
           f"<h2>{esc(subject(n))}</h2>"]
    if n.kind is Kind.SILENCE_EXPIRED:
        out += [f"<p>{esc(line)}</p>" for line in silence_lines(n)]
        out.append("<p>The alerts it muted still fire; they are no longer silenced.</p>")
    for title, alerts in (("Firing", firing(n)), ("Resolved", resolved(n))):
        if alerts:
            out.append(f"<h3>{title} ({len(alerts)})</h3>")
            out += [_alert_html(alert) for alert in alerts]
    if n.truncated_alerts:
        out.append(f"<p>... and {n.truncated_alerts} more alerts not listed.</p>")
    url = n.external_url or external_url
    if url:
        out.append(f'<p>Sent by the <a href="{esc(url, quote=True)}">Geoplex notifier</a>, '
                   f"receiver {esc(n.receiver)}.</p>")
    else:
        out.append(f"<p>Sent by the Geoplex notifier, receiver {esc(n.receiver)}.</p>")
    out.append("</body></html>")
    return "\n".join(out)
