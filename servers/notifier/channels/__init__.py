"""The notifier's delivery channels (Alertmanager's integrations): email, PagerDuty
(Events API v2) and webhook (Alertmanager's payload, version 4).

A channel delivers one :class:`~..notification.Notification` for one receiver and
raises :class:`~..notification.DeliveryError` when it cannot, ``retryable`` saying
whether a retry may help. :func:`build_channels` makes a receiver's channels from its
Alertmanager configuration::

    name: ops
    email_configs:     [{to, from, smarthost, auth_username, auth_password, ...}]
    pagerduty_configs: [{routing_key, severity, ...}]
    webhook_configs:   [{url, max_alerts, http_config: {hmac_secret, ...}}]

Field names are Alertmanager's (see each module for the fields supported); an unknown
field, a value of the wrong type, a Go template or an integration we do not have raises
:class:`ChannelConfigError` naming the receiver, the config and its index, and the
field. Each channel owns its client (one HTTP session per channel; SMTP connects per
message); :meth:`Channel.close` releases it.

Besides the protocol, the channels built here have ``receiver``, ``index`` and
``send_resolved`` (resolved alerts are dropped in ``send`` unless it is true; a
notification of resolved alerts only is then not sent at all, as in Alertmanager).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..notification import DeliveryError, Notification
from .config import ChannelConfigError, Section
from .email import EmailChannel
from .pagerduty import PagerDutyChannel
from .webhook import WebhookChannel, verify_signature

__all__ = ["Channel", "ChannelConfigError", "DeliveryError", "EmailChannel",
           "PagerDutyChannel", "WebhookChannel", "build_channels", "verify_signature"]


class Channel(Protocol):
    """One integration of one receiver."""

    integration: str  # "email" | "pagerduty" | "webhook"

    async def send(self, n: Notification) -> None:
        """Deliver ``n``; raises DeliveryError(retryable=...) when it cannot."""
        ...

    async def close(self) -> None:
        """Release the channel's client; idempotent."""
        ...


_BUILDERS = {"email_configs": EmailChannel.from_config,
             "pagerduty_configs": PagerDutyChannel.from_config,
             "webhook_configs": WebhookChannel.from_config}
# Alertmanager integrations we do not have: named so the error says so
_OTHER_INTEGRATIONS = ("discord_configs", "jira_configs", "msteams_configs",
                       "msteamsv2_configs", "opsgenie_configs", "pushover_configs",
                       "rocketchat_configs", "slack_configs", "sns_configs",
                       "telegram_configs", "victorops_configs", "webex_configs",
                       "wechat_configs")


def build_channels(receiver: Mapping[str, Any], *, external_url: str = "") -> list[Channel]:
    """The channels of one Alertmanager receiver, in order: email, PagerDuty, webhook
    configs, each in its list's order. ``external_url`` is where the notifier is
    reached (webhook ``externalURL``, PagerDuty ``client_url``, the email footer)
    when a notification does not carry one. Raises ChannelConfigError."""
    name = receiver.get("name") if isinstance(receiver, Mapping) else None
    if not isinstance(name, str) or not name.strip():
        raise ChannelConfigError(str(name or ""), "", None, "name",
                                 "every receiver needs a name")
    top = Section(receiver, receiver=name, config="", index=None)
    top.string("name")
    channels: list[Channel] = []
    for config, build in _BUILDERS.items():
        entries = top.raw(config)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ChannelConfigError(name, config, None, "",
                                     f"expected a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            section = Section(entry, receiver=name, config=config, index=index)
            channels.append(build(section, external_url=external_url))
    for other in _OTHER_INTEGRATIONS:
        top.forbid(other, "not supported (the notifier has email, pagerduty and webhook)")
    top.finish()
    return channels
