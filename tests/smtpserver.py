"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1 at a free port, keeping every message."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
from collections.abc import Iterator

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Received:
    """aiosmtpd handler: keeps every envelope it is given; `port` is where it listens."""

    def __init__(self, port: int):
        self.port, self.envelopes = port, []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


@contextlib.contextmanager
def serve(**controller: object) -> Iterator[Received]:
    """A running server (Controller keywords: authenticator, auth_require_tls ...) until the block ends."""
    handler = Received(free_port())
    ctl = Controller(handler, hostname="127.0.0.1", port=handler.port, **controller)
    ctl.start()
    try:
        yield handler
    finally:
        ctl.stop()
