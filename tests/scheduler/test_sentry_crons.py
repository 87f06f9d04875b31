"""Sentry Crons check-ins from the worker, through sentry-sdk's real transport (issue 9)."""

from __future__ import annotations

import time

import pytest
from celery import current_app
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app.context import iso
from scheduler_app.crons import check_in_id
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from tests.processes import CeleryProcess, process_env, wait_for, wait_for_worker
from tests.sentry_recorder import SentryRecorder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def crons_worker(worker):
    recorder = SentryRecorder()
    proc = CeleryProcess(
        "worker-crons",
        ["worker", "-l", "INFO", "-c", "1", "-n", "crons@%h", "-Q", "crons", "--without-gossip", "--without-mingle"],
        process_env(SENTRY_DSN=recorder.dsn, SENTRY_ENVIRONMENT="test"),
    )
    try:
        wait_for_worker(proc)
        yield recorder
    finally:
        proc.stop()
        proc.cleanup()
        recorder.close()


def check_ins(recorder: SentryRecorder, task_id: str) -> list[dict]:
    wanted = check_in_id(task_id)
    return [p for h, p in recorder.items if h.get("type") == "check_in" and p and p.get("check_in_id") == wanted]


def send_scheduled(scheduled: str):
    task = current_app.tasks[get_spec("test-flaky").task_name]
    return task.apply_async(kwargs={"trigger": "beat", "scheduled_for": scheduled}, queue="crons")


def test_check_ins_for_success_retry_and_failure(crons_worker, job_redis):
    # given the job's schedule: 09:00 on Mondays, read in Europe/Berlin
    cron = CrontabSchedule.objects.create(minute="0", hour="9", day_of_month="*", month_of_year="*",
                                          day_of_week="1", timezone="Europe/Berlin")
    PeriodicTask.objects.create(name="test-flaky", task=get_spec("test-flaky").task_name, crontab=cron)

    # when a scheduled run succeeds at once
    ok = send_scheduled("2026-11-23T08:00:00Z")
    wait_for(lambda: len(check_ins(crons_worker, ok.id)) >= 2, 30, message="two check-ins")
    started, finished = check_ins(crons_worker, ok.id)
    # then it opened and closed one check-in on the job's monitor, with the real schedule and zone
    assert (started["monitor_slug"], started["status"]) == ("test-flaky", "in_progress")
    assert finished["status"] == "ok" and finished["duration"] >= 0
    config = started["monitor_config"]
    assert config["schedule"] == {"type": "crontab", "value": "0 9 * * 1"}
    assert config["timezone"] == "Europe/Berlin"
    assert config["checkin_margin"] == 5 and config["max_runtime"] == 3  # 300 s grace; 180 s soft limit

    # when a run fails once, then succeeds on its retry
    job_redis.hset("testjob:test-flaky", "fail_times", 1)
    retried = send_scheduled("2026-11-16T08:00:00Z")
    wait_for(lambda: JobRun.objects.filter(task_id=retried.id, status="SUCCEEDED").exists(), 30)
    wait_for(lambda: len(check_ins(crons_worker, retried.id)) >= 2, 10, message="retried run's check-ins")
    # then in_progress and ok: no error check-in
    assert [c["status"] for c in check_ins(crons_worker, retried.id)] == ["in_progress", "ok"]

    # when a run fails all three attempts
    job_redis.hset("testjob:test-flaky", "fail_times", 10)
    failed = send_scheduled("2026-11-09T08:00:00Z")
    wait_for(lambda: JobRun.objects.filter(task_id=failed.id, status="FAILED").exists(), 30)
    wait_for(lambda: len(check_ins(crons_worker, failed.id)) >= 2, 10, message="failed run's check-ins")
    time.sleep(2.0)
    # then one error check-in and one error event in all
    assert [c["status"] for c in check_ins(crons_worker, failed.id)] == ["in_progress", "error"]
    assert len(crons_worker.events()) == 1

    # and a manual run does not check in
    manual = current_app.tasks[get_spec("test-noop").task_name].apply_async(kwargs={"trigger": "manual"}, queue="crons")
    wait_for(lambda: JobRun.objects.filter(task_id=manual.id, status="SUCCEEDED").exists(), 30)
    time.sleep(1.0)
    assert check_ins(crons_worker, manual.id) == []
    assert iso(JobRun.objects.get(task_id=ok.id).scheduled_for) == "2026-11-23T08:00:00Z"


def test_a_trigger_skipped_because_the_lock_is_held_checks_in_ok(crons_worker, job_redis):
    import subprocess
    import sys

    from scheduler_app.locks import default_backend
    from tests.processes import ROOT

    cron = CrontabSchedule.objects.create(minute="0", hour="9", day_of_month="*", month_of_year="*",
                                          day_of_week="1", timezone="Europe/Berlin")
    PeriodicTask.objects.create(name="test-flaky", task=get_spec("test-flaky").task_name, crontab=cron)
    # given an earlier scheduled time's run holding the lock
    spec = get_spec("test-flaky")
    default_backend().raise_or_lock(spec.lock_key, 30, token="test-flaky:20261026T080000Z:" + "c" * 32)
    # when a sender with Sentry (as beat would be) triggers the next scheduled time
    code = ("from celery import current_app\n"
            "from scheduler_app.registry import get_spec\n"
            "import sentry_sdk\n"
            "task = current_app.tasks[get_spec('test-flaky').task_name]\n"
            "r = task.apply_async(kwargs={'trigger': 'beat', 'scheduled_for': '2026-11-02T08:00:00Z'}, queue='crons')\n"
            "print(r.state, r.id)\n"
            "sentry_sdk.flush(5)\n")
    proc = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=process_env(SENTRY_DSN=crons_worker.dsn, SENTRY_ENVIRONMENT="test"), timeout=60)
    state, task_id = proc.stdout.split()[-2:]
    assert state == "REJECTED", proc.stdout + proc.stderr
    # then the skip is recorded, and its time checks in ok: not missed, not failed
    assert JobRun.objects.get(task_id=task_id).skip_reason == "lock_held"
    wait_for(lambda: check_ins(crons_worker, task_id), 10, message="the skip's check-in")
    assert [c["status"] for c in check_ins(crons_worker, task_id)] == ["ok"]
