"""A failed run reaches Sentry once; a run that recovers on retry does not (SPEC §3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import current_app

from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from tests.jobs import wait_until_finished
from tests.processes import CeleryProcess, process_env, wait_for_worker
from tests.sentry_recorder import SentryRecorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sentry(worker):
    """A worker on the ``sentry`` queue that reports to a :class:`SentryRecorder`: ``.worker``, ``.recorder``."""
    recorder = SentryRecorder()
    proc = CeleryProcess(
        "worker-sentry",
        ["worker", "-l", "INFO", "-c", "1", "-n", "sentry@%h", "-Q", "sentry", "--without-gossip", "--without-mingle"],
        process_env(SENTRY_DSN=recorder.dsn, SENTRY_ENVIRONMENT="test"),
    )
    try:
        wait_for_worker(proc)
        yield SimpleNamespace(worker=proc, recorder=recorder)
    finally:
        proc.stop()
        proc.cleanup()
        recorder.close()


def run_on_the_sentry_worker(sentry, job_redis, fail_times: int) -> JobRun:
    """Run test-flaky failing ``fail_times`` attempts; return its run once everything it sends has reached Sentry.

    The positive signal that nothing more will arrive: the message was handled to the end (after_return
    included), then the worker shut down warmly, which flushes Sentry's queue in the pool process.
    """
    job_redis.hset("testjob:test-flaky", "fail_times", fail_times)
    task = current_app.tasks[get_spec("test-flaky").task_name]
    result = task.apply_async(kwargs={"trigger": "manual"}, queue="sentry")
    wait_until_finished(job_redis, "test-flaky", result.id)
    sentry.worker.shutdown()
    assert "Restoring" not in sentry.worker.log()  # it held no other message
    return JobRun.objects.get(task_id=result.id)


def test_one_sentry_event_for_a_run_that_fails_all_three_attempts(sentry, job_redis):
    # given a job that fails every attempt, run on a worker that reports to Sentry
    # when the run has failed
    run = run_on_the_sentry_worker(sentry, job_redis, fail_times=10)
    assert (run.status, run.attempts) == ("FAILED", 3)
    assert "Job test-flaky failed after 3 attempts in " in sentry.worker.log()
    # then exactly one error event arrived, for the last attempt's exception, with no personal data
    events = sentry.recorder.events()
    assert len(events) == 1, [e.get("exception") for e in events]
    exception = events[0]["exception"]["values"][-1]
    assert exception["type"] == "FlakyError"
    assert exception["value"] == "planned failure of test-flaky on attempt 3"
    assert events[0]["environment"] == "test"
    assert "user" not in events[0] or not events[0]["user"].get("email")


def test_no_sentry_event_for_a_run_that_fails_once_then_succeeds(sentry, job_redis):
    # given a job that fails its first attempt only
    # when the run has succeeded on its second attempt
    run = run_on_the_sentry_worker(sentry, job_redis, fail_times=1)
    assert (run.status, run.attempts) == ("SUCCEEDED", 2)
    assert ("Job test-flaky attempt 1/3 failed: FlakyError: planned failure of test-flaky on attempt 1; "
            "retrying in 1s") in sentry.worker.log()
    # then nothing reached Sentry
    assert sentry.recorder.events() == []
