"""A local SMTP sink for ``geoplex up``: the notifier's alert emails land here, so a
newcomer sees one arrive without a mail server. Each message is saved under
``<state dir>/mail/`` as an ``.eml`` file and announced on the console (sender, recipients
and subject only). aiosmtpd (Apache-2.0) is the server."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _Handler:
    def __init__(self, directory: Path, announce: Callable[[str], None]) -> None:
        self.directory = directory
        self.announce = announce
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.count += 1
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.count:04d}.eml"
        path.write_bytes(content)
        message = email.message_from_bytes(content, policy=email.policy.default)
        self.announce(f"[mail] to {', '.join(envelope.rcpt_tos)}: {message['Subject']} "
                      f"(saved as {path})")
        return "250 OK"


class MailSink:
    """An SMTP server on 127.0.0.1:``port`` (0: a free one) in a thread of its own."""

    def __init__(self, directory: Path, announce: Callable[[str], None] = print,
                 port: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._controller = Controller(_Handler(directory, announce), hostname="127.0.0.1",
                                      port=port or _free_port())

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self._controller.port}"

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _free_port() -> int:
    from geoplex.infra.local import free_port

    return free_port()
