"""A failed run reaches Sentry once; a run that recovers on retry does not (SPEC §3)."""

from __future__ import annotations

import time

import pytest
from celery import current_app

from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from tests.processes import CeleryProcess, process_env, wait_for, wait_for_worker
from tests.sentry_recorder import SentryRecorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sentry_worker(worker):
    recorder = SentryRecorder()
    proc = CeleryProcess(
        "worker-sentry",
        ["worker", "-l", "INFO", "-c", "1", "-n", "sentry@%h", "-Q", "sentry", "--without-gossip", "--without-mingle"],
        process_env(SENTRY_DSN=recorder.dsn, SENTRY_ENVIRONMENT="test"),
    )
    try:
        wait_for_worker(proc)
        yield recorder
    finally:
        proc.stop()
        proc.cleanup()
        recorder.close()


def test_one_sentry_event_for_a_run_that_fails_all_three_attempts(sentry_worker, job_redis):
    # given a job that fails every attempt, run on a worker that reports to Sentry
    job_redis.hset("testjob:test-flaky", "fail_times", 10)
    task = current_app.tasks[get_spec("test-flaky").task_name]
    result = task.apply_async(kwargs={"trigger": "manual"}, queue="sentry")
    # when the run has failed
    wait_for(lambda: JobRun.objects.filter(task_id=result.id, status="FAILED").exists(), 30)
    # then exactly one error event arrives, for the last attempt's exception, with no personal data
    wait_for(lambda: sentry_worker.events(), 10, message="a Sentry event")
    time.sleep(2.0)
    events = sentry_worker.events()
    assert len(events) == 1, [e.get("exception") for e in events]
    exception = events[0]["exception"]["values"][-1]
    assert exception["type"] == "FlakyError"
    assert "attempt 3" in exception["value"]
    assert events[0]["environment"] == "test"
    assert "user" not in events[0] or not events[0]["user"].get("email")


def test_no_sentry_event_for_a_run_that_fails_once_then_succeeds(sentry_worker, job_redis):
    # given a job that fails its first attempt only
    job_redis.hset("testjob:test-flaky", "fail_times", 1)
    task = current_app.tasks[get_spec("test-flaky").task_name]
    result = task.apply_async(kwargs={"trigger": "manual"}, queue="sentry")
    # when the run has succeeded on its second attempt
    wait_for(lambda: JobRun.objects.filter(task_id=result.id, status="SUCCEEDED").exists(), 30)
    assert JobRun.objects.get(task_id=result.id).attempts == 2
    # then nothing reached Sentry
    time.sleep(3.0)
    assert sentry_worker.events() == []
