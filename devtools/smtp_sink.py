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
from aiosmtpd.smtp import SMTP

from devtools.embedded_redis import free_port

# aiosmtpd logs every SMTP command at INFO: far too much for a test's or the bench's output.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class _BulkDataSMTP(SMTP):
    """aiosmtpd's server reading a message's DATA in a few large reads instead of line by line.

    The same protocol, replies and handler hooks as :class:`aiosmtpd.smtp.SMTP`
    (its other commands are untouched); only the body is received as a block
    up to the terminating ``<CRLF>.<CRLF>`` and dot-unstuffed at once (RFC
    5321 4.5.2). aiosmtpd's own ``smtp_DATA`` awaits one ``readuntil`` per
    line with bookkeeping per line: about half of the server's CPU per
    message for a 90-line summary email, which on the benchmark's machine
    competes with the workers being measured. The server does not offer
    PIPELINING, so after the terminator the client waits for the reply.
    """

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's name
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            received = await self._read_until_terminator()
        except asyncio.CancelledError:
            self._writer.close()  # the connection was reset during DATA
            raise
        body = received[:-3]  # less the final ".<CRLF>"; ends with CRLF unless empty
        if body.startswith(b"."):
            body = body[1:]
        content = bytes(body.replace(b"\r\n.", b"\r\n"))
        if self.data_size_limit and len(content) > self.data_size_limit:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else None
        self._set_post_data_state()
        await self.push(status or "250 OK")

    async def _read_until_terminator(self) -> bytearray:
        """Everything up to and including the ``.<CRLF>`` that ends the data (a line holding a lone dot)."""
        reader = self._reader
        received = bytearray()
        while True:
            try:
                received += await reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:  # more than the reader's limit without ".\r\n" yet
                received += await reader.readexactly(exc.consumed)
                continue
            if received == b".\r\n" or received.endswith(b"\r\n.\r\n"):
                return received


class _Controller(Controller):
    """aiosmtpd's controller serving :class:`_BulkDataSMTP`."""

    def factory(self) -> SMTP:
        return _BulkDataSMTP(self.handler, **self.SMTP_kwargs)


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
        self._controller = _Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
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


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (a development requirement), else asyncio's.

    On the benchmark's machine the server shares the cores with the workers it
    measures; uvloop's transport and scheduling cost about a third less CPU a
    message than asyncio's pure-Python selector loop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    """``python -m devtools.smtp_sink PORT FILE``: a counting SMTP server in its own process (the benchmark's).

    In its own process so that it does not share a GIL with the sender being
    measured. Prints ``ready`` once it listens; stops on SIGTERM. It speaks
    SMTP as aiosmtpd does (:class:`_BulkDataSMTP`) and appends one line per
    recipient of every message accepted to FILE.
    """
    import signal
    import sys

    port, path = int(sys.argv[1]), sys.argv[2]
    controller = _Controller(_CountingHandler(path), hostname="127.0.0.1", port=port, data_size_limit=None,
                             loop=_event_loop())
    controller.start()
    print("ready", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
