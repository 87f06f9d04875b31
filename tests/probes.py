"""Stop a real worker process at a known point of a job, so that a test can SIGKILL it exactly there.

Nothing here is timed: the process waits at the point for as long as the
test needs, so where it dies does not depend on how fast the machine is.
Two points are offered, both switched on through the environment of the
worker the test starts (:func:`tests.processes.process_env`):

* a statement: ``EXTRA_JOB_MODULES=tests.jobs,tests.probes`` and
  ``TEST_PAUSE_SQL="<before|after>:<N>:<SQL prefix>"``, e.g.
  ``before:3:DELETE FROM "audit_auditlog"`` stops the process just before
  its 3rd statement starting with that text (``after``: once it ran, before
  the code that sent it goes on, e.g. before its transaction commits);
* an email: ``EMAIL_BACKEND=tests.probes.PausingFileBackend``,
  ``EMAIL_FILE_PATH=<dir>`` and ``TEST_PAUSE_AFTER_EMAILS=N``: Django's
  file-based backend (every message is flushed to a file in ``<dir>`` as it
  is sent) that stops the process once its N-th message is written.

At the point the process appends ``"<pid> <what>"`` to the Redis list
:data:`PAUSED`, then blocks on :data:`RESUME` (at most
``TEST_PAUSE_SECONDS``, default 60, so a test that fails does not leave it
stuck forever). :func:`wait_until_paused` waits for the entry.
"""

from __future__ import annotations

import email
import os
from pathlib import Path

import redis
from django.conf import settings
from django.core.mail.backends import filebased
from django.db.backends.signals import connection_created

from scheduler_app.redis_urls import client_from_url

#: Redis list a paused process appends ``"<pid> <what>"`` to (``testjob:*`` keys are cleared by ``job_redis``).
PAUSED = "testjob:probe:paused"
#: Redis list a paused process waits on.
RESUME = "testjob:probe:resume"


def _pause(what: str) -> None:
    client = client_from_url(settings.REDIS_URL)
    try:
        client.rpush(PAUSED, f"{os.getpid()} {what}")
        client.blpop([RESUME], timeout=float(os.environ.get("TEST_PAUSE_SECONDS", "60")))
    finally:
        client.close()


class _StatementPause:
    """A Django execute wrapper that pauses around the N-th statement with a given prefix."""

    def __init__(self, spec: str) -> None:
        when, number, self.prefix = spec.split(":", 2)
        if when not in ("before", "after"):
            raise ValueError(f"TEST_PAUSE_SQL={spec!r}: 'before' or 'after' first")
        self.when = when
        self.number = int(number)
        self.seen = 0

    def __call__(self, execute, sql, params, many, context):
        if not sql.startswith(self.prefix):
            return execute(sql, params, many, context)
        self.seen += 1
        here = self.seen == self.number
        if here and self.when == "before":
            _pause(f"before statement {self.number}")
        result = execute(sql, params, many, context)
        if here and self.when == "after":
            _pause(f"after statement {self.number}")
        return result


_statement_pause = _StatementPause(os.environ["TEST_PAUSE_SQL"]) if os.environ.get("TEST_PAUSE_SQL") else None


def _install_statement_pause(sender, connection, **kwargs) -> None:
    if _statement_pause is not None and _statement_pause not in connection.execute_wrappers:
        connection.execute_wrappers.append(_statement_pause)


connection_created.connect(_install_statement_pause, dispatch_uid="tests.probes.statement_pause")


class PausingFileBackend(filebased.EmailBackend):
    """Django's file-based backend that pauses the process after its ``TEST_PAUSE_AFTER_EMAILS``-th message."""

    #: Messages written by this process.
    written = 0

    def send_messages(self, messages):
        count = super().send_messages(messages)
        before = PausingFileBackend.written
        PausingFileBackend.written += count
        stop_after = int(os.environ.get("TEST_PAUSE_AFTER_EMAILS", "0"))
        if stop_after and before < stop_after <= PausingFileBackend.written:
            _pause(f"after email {stop_after}")
        return count


def wait_until_paused(client: redis.Redis, proc, *, timeout: float = 60.0) -> str:
    """Wait until a process paused at its point; return its entry. Fails early if ``proc`` exited."""
    from tests.processes import wait_for

    def paused():
        if not proc.alive():
            raise AssertionError(f"{proc.kind} exited before it paused:\n{proc.log()}")
        return client.lindex(PAUSED, 0)

    return wait_for(paused, timeout, interval=0.02, message=f"{proc.kind} to pause at its probe")


def recipients_in(directory: Path) -> list[str]:
    """The ``To`` address of every message the file-based backend wrote into ``directory``, in file order."""
    found = []
    for path in sorted(directory.glob("*.log")):
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                found.append(email.message_from_bytes(chunk)["To"])
    return found
