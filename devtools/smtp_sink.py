"""A real SMTP server on a free port (aiosmtpd) for the summaries tests and benchmark.

Messages are received over real SMTP and kept in memory::

    with SmtpSink(refuse={"rita@example.com"}) as sink:
        ...  # EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend, EMAIL_HOST=127.0.0.1, EMAIL_PORT=sink.port
        sink.recipients()  # one address per message received, in order

``refuse``: recipients answered ``550 5.1.1`` at RCPT (Django raises
``SMTPRecipientsRefused``). ``pause_before``: the N-th message (1-based) and any after it wait
at its RCPT until :meth:`resume` (the messages before it were accepted with
``250``), so a test can kill the sender right after message N-1 went out;
:attr:`paused` is set while it waits.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import threading
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from devtools.embedded_redis import free_port

# aiosmtpd logs every SMTP command at INFO: far too much for a test's or the bench's output.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's name
        sink = self.sink
        if address in sink.refuse:
            return "550 5.1.1 Mailbox unavailable"
        if sink.pause_before is not None and sink.count() + 1 >= sink.pause_before and not sink._resume.is_set():
            sink.paused.set()
            while not sink._resume.is_set():
                await asyncio.sleep(0.02)  # never block the loop: other connections go on
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.sink._lock:
            for rcpt in envelope.rcpt_tos:
                self.sink.messages.append((rcpt, message))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 and a free port; see the module docstring."""

    def __init__(self, *, refuse: set[str] | frozenset[str] = frozenset(), pause_before: int | None = None) -> None:
        self.refuse = set(refuse)
        self.pause_before = pause_before
        self.paused = threading.Event()
        self._resume = threading.Event()
        self._lock = threading.Lock()
        self.messages: list[tuple[str, EmailMessage]] = []
        self.port = free_port()
        # No size limit and a long timeout: a paused session must stay open.
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                      data_size_limit=None, timeout=600)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._resume.set()
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def resume(self) -> None:
        """Let the paused message (and every later one) through."""
        self._resume.set()

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def recipients(self) -> list[str]:
        """The envelope recipient of every message received, in order (one per message and recipient)."""
        with self._lock:
            return [rcpt for rcpt, _ in self.messages]

    def env(self) -> dict[str, str]:
        """Environment for a process that sends through this server with Django's SMTP backend."""
        return {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1",
                "EMAIL_PORT": str(self.port), "EMAIL_USE_TLS": "false"}


class _CountingHandler:
    """For :func:`main`: accept everything, append one line per recipient to a file, parse nothing."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the server's life

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self._file.write("".join(f"{rcpt}\n" for rcpt in envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def main() -> None:
    """``python -m devtools.smtp_sink PORT FILE``: a counting SMTP server in its own process (the benchmark's).

    In its own process so that it does not share a GIL with the sender being
    measured. Prints ``ready`` once it listens; stops on SIGTERM.
    """
    import signal
    import sys

    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(_CountingHandler(path), hostname="127.0.0.1", port=port, data_size_limit=None)
    controller.start()
    print("ready", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
