"""Fixtures shared by the suite: a real worker process for the session and clean job state."""

from __future__ import annotations

import pytest
import redis as redis_lib
from django.conf import settings

from tests.processes import drain_worker, start_worker, wait_for_worker


@pytest.fixture
def job_redis():
    """A client on the test Redis with every lock and test-job key removed (the broker's keys stay)."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    for pattern in ("qo_*", "testjob:*"):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    yield client
    client.close()


@pytest.fixture(scope="session")
def shared_worker(django_db_setup, django_db_blocker):
    """One real ``celery worker`` (prefork, 2 processes) for the session, on the test database."""
    proc = start_worker("shared", concurrency=2)
    try:
        wait_for_worker(proc)
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


@pytest.fixture
def worker(shared_worker):
    """The session's worker, idle and with an empty default queue when the test starts and ends.

    Drained before the test (whatever an earlier test left) and after it,
    before pytest-django empties the database (this fixture is set up after
    the database fixture, so it is torn down before it): a message a test
    left behind can neither run inside the next test nor write rows after
    the clean-up.
    """
    drain_worker(shared_worker.node)
    yield shared_worker
    drain_worker(shared_worker.node)
