"""Real ``celery worker`` and ``celery beat`` processes for the integration tests.

Each process gets the test process's environment plus ``DATABASE_URL``
pointing at the test database (the SQLite file or the PostgreSQL test
database pytest-django created), so it sees what the test committed.
Output goes to a log file that the tests read.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELERY = [sys.executable, "-m", "celery", "-A", "config"]


def test_database_url() -> str:
    """A DATABASE_URL for the test database this pytest run uses."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class CeleryProcess:
    """One celery process; ``log()`` returns what it printed so far."""

    def __init__(self, kind: str, args: list[str], env: dict[str, str], prefix: list[str] | None = None):
        self.kind = kind
        self.node: str | None = None  # a worker's node name (``NAME@host``)
        self.dir = tempfile.mkdtemp(prefix=f"celery-{kind}-")
        self.log_path = Path(self.dir) / f"{kind}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            (prefix or []) + CELERY + args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the log; return the log."""
        def seen():
            log = self.log()
            return log if log.count(text) >= count else None

        return wait_for(seen, timeout, message=f"{count}x {text!r} in the {self.kind} log")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Warm shutdown: SIGTERM to the main process only, which lets its pool processes end
        their work loop normally (Sentry's Celery integration flushes there), then wait."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"{self.kind} did not shut down within {timeout}s") from None
        self._log.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def node_name(name: str) -> str:
    """The node name of a worker started with ``-n NAME@%h`` (what ``request.hostname`` holds)."""
    return f"{name}@{socket.gethostname()}"


def start_worker(name: str = "w1", concurrency: int = 2, queues: str | None = None, prefetch: bool = True,
                 **extra_env: str) -> CeleryProcess:
    """Start a prefork ``celery worker`` named ``NAME@%h``.

    ``queues``: comma-separated queues to consume (default: Celery's default
    queue). ``prefetch=False`` (``--disable-prefetch``): take a message only
    when a pool process is free, so a busy worker leaves the next message to
    an idle one.
    """
    args = ["worker", "-l", "INFO", "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip",
            "--without-mingle", "-P", "prefork"]
    if queues:
        args += ["-Q", queues]
    if not prefetch:
        args.append("--disable-prefetch")
    proc = CeleryProcess(f"worker-{name}", args, process_env(**extra_env))
    proc.node = node_name(name)
    return proc


def require_faketime() -> None:
    """Skip the calling test without ``faketime``; fail it instead when ``CI=true`` (CI must run it)."""
    if shutil.which("faketime"):
        return
    reason = "libfaketime's `faketime` (Debian package faketime) is not installed"
    if os.environ.get("CI", "").lower() == "true":
        raise AssertionError(f"{reason}; CI=true, so this test must run, not skip (.ci/run installs it)")
    import pytest

    pytest.skip(f"{reason}: the clock-skew test needs it (`apt-get install faketime`); CI=true fails instead")


def start_beat(name: str = "b1", faketime: str | None = None, **extra_env: str) -> CeleryProcess:
    """Start ``celery beat -S django``; ``faketime`` (e.g. ``"+1s"``) runs it under libfaketime."""
    workdir = tempfile.mkdtemp(prefix=f"beat-{name}-")
    prefix = ["faketime", "-f", faketime] if faketime else None
    env = process_env(**extra_env)
    if faketime:
        env["FAKETIME_DONT_RESET"] = "1"
    return CeleryProcess(
        f"beat-{name}",
        ["beat", "-S", "django", "-l", "INFO", "--max-interval", "1", "-s", os.path.join(workdir, "schedule")],
        env, prefix=prefix,
    )


def wait_for_worker(proc: CeleryProcess, timeout: float = 60.0) -> None:
    """Wait until the worker logs that it is ready (and fail early if it died)."""
    def ready():
        if not proc.alive():
            raise AssertionError(f"{proc.kind} exited early:\n{proc.log()}")
        return "ready." in proc.log()

    wait_for(ready, timeout, message=f"{proc.kind} to be ready")


def drain_worker(node: str, timeout: float = 30.0) -> None:
    """Leave the worker ``node`` idle and Celery's default queue empty.

    Purges the messages no worker has taken, revokes those the worker holds
    without running them (prefetched, or waiting for a retry's countdown),
    then waits until it runs and holds nothing, so a revoked message's own
    bookkeeping (``task_revoked``: lock released, run marked) is done too.
    """
    from celery import current_app

    control = current_app.control
    control.purge()
    inspect = control.inspect(destination=[node], timeout=2.0, limit=1)

    def held() -> dict[str, list[str]]:
        found = {}
        for kind in ("active", "reserved", "scheduled"):
            reply = getattr(inspect, kind)()
            if reply is None:
                raise AssertionError(f"worker {node} did not answer `inspect {kind}`")
            found[kind] = [(t.get("request") or t)["id"] for t in reply.get(node) or []]
        return found

    now = held()
    if now["reserved"] or now["scheduled"]:
        control.revoke(now["reserved"] + now["scheduled"])
    wait_for(lambda: not any(held().values()), timeout, interval=0.2, message=f"worker {node} to be idle")
