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
        self.dir = tempfile.mkdtemp(prefix=f"celery-{kind}-")
        self.log_path = Path(self.dir) / f"{kind}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            (prefix or []) + CELERY + args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start_worker(name: str = "w1", concurrency: int = 2, **extra_env: str) -> CeleryProcess:
    return CeleryProcess(
        f"worker-{name}",
        ["worker", "-l", "INFO", "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-P", "prefork"],
        process_env(**extra_env),
    )


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
