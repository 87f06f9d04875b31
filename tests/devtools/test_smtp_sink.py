"""The tests' and benchmark's SMTP server reads a message's DATA as a block: the bytes it keeps are the sent ones."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.embedded_redis import free_port
from devtools.smtp_sink import SmtpSink, _Controller

ROOT = Path(__file__).resolve().parents[2]


def _send_raw(port: int, body: bytes, to: str = "ann@example.com") -> tuple[int, bytes]:
    """Send ``body`` as it is (smtplib dot-stuffs it and adds the terminator); return the reply to the data."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("sender@example.com")
        client.rcpt(to)
        return client.data(body)


class _Keep:
    """A handler keeping each message's content as the server received it (after dot-unstuffing)."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.contents.append(envelope.content)
        return "250 Kept"


@pytest.mark.parametrize("body", [
    pytest.param(b"Subject: hi\r\n\r\nplain\r\n", id="plain"),
    pytest.param(b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nends with a period.\r\n", id="dots"),
    pytest.param(b".first line starts with a dot\r\n\r\nbody\r\n", id="first-line-dot"),
    pytest.param(b"Subject: long\r\n\r\n" + b"x" * 998 + b"\r\n" + b"line of text.\r\n" * 5000, id="over-limit"),
    pytest.param(b"no final line break", id="unterminated"),
])
def test_the_server_keeps_exactly_the_bytes_the_client_sent(body):
    # given: the server with a handler that keeps the raw content
    handler = _Keep()
    controller = _Controller(handler, hostname="127.0.0.1", port=free_port(), data_size_limit=None)
    controller.start()
    try:
        # when: a message goes through real SMTP (smtplib dot-stuffs lines starting with ".")
        code, reply = _send_raw(controller.port, body)
    finally:
        controller.stop()
    # then: the handler's reply, and the content unstuffed back to what was sent (smtplib ends it with CRLF)
    assert (code, reply) == (250, b"Kept")
    assert handler.contents == [body if body.endswith(b"\r\n") else body + b"\r\n"]


def test_a_lone_dot_right_after_354_is_an_empty_message():
    handler = _Keep()
    controller = _Controller(handler, hostname="127.0.0.1", port=free_port(), data_size_limit=None)
    controller.start()
    try:
        with socket.create_connection(("127.0.0.1", controller.port), timeout=10) as conn:
            replies = conn.makefile("rb")
            replies.readline()  # greeting
            for command in (b"HELO me", b"MAIL FROM:<s@example.com>", b"RCPT TO:<ann@example.com>", b"DATA"):
                conn.sendall(command + b"\r\n")
                replies.readline()
            conn.sendall(b".\r\n")
            assert replies.readline() == b"250 Kept\r\n"
    finally:
        controller.stop()
    assert handler.contents == [b""]


def test_an_empty_message_is_accepted():
    with SmtpSink() as sink:
        code, _ = _send_raw(sink.port, b"")
        assert code == 250
        assert sink.recipients() == ["ann@example.com"]


def test_refused_recipients_and_many_messages_on_one_connection():
    with SmtpSink(refuse={"rita@example.com"}) as sink, smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
        for n in range(50):
            client.sendmail("sender@example.com", [f"m{n}@example.com"], f"Subject: {n}\r\n\r\nbody {n}.\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("sender@example.com", ["rita@example.com"], "Subject: no\r\n\r\nno\r\n")
        client.sendmail("sender@example.com", ["last@example.com"], "Subject: last\r\n\r\nlast\r\n")
        assert sink.recipients() == [f"m{n}@example.com" for n in range(50)] + ["last@example.com"]
        assert [message["Subject"] for _, message in sink.messages][:3] == ["0", "1", "2"]


def test_the_benchmark_server_process_counts_every_recipient(tmp_path):
    # given: the counting server in its own process, as the benchmark starts it
    port, path = free_port(), tmp_path / "received.txt"
    path.write_text("")
    server = subprocess.Popen([sys.executable, "-m", "devtools.smtp_sink", str(port), str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        # when: messages go through one connection, one of them with two recipients
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            for n in range(20):
                client.sendmail("sender@example.com", [f"m{n}@example.com"], f"Subject: {n}\r\n\r\n.{n}\r\n")
            client.sendmail("sender@example.com", ["a@example.com", "b@example.com"], "Subject: two\r\n\r\nx\r\n")
        # then: one line per recipient
        deadline = time.monotonic() + 5
        while len(path.read_text().splitlines()) < 22 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.read_text().splitlines() == [f"m{n}@example.com" for n in range(20)] + ["a@example.com",
                                                                                            "b@example.com"]
    finally:
        server.terminate()
        server.wait(10)
