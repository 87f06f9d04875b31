"""The database is the fence (issue 11): heartbeats, one working run per job, lost runs judged from the heartbeat.

In-process, on the real test database and the test's own Redis. The tests'
heartbeat period is set explicitly, so the right values below follow from it:
with ``RUN_HEARTBEAT_SECONDS = 10`` a run is lost after 30 s without a
heartbeat, and ``run_job`` presumes its worker dead after 1.25 × 10 + 1 = 13.5 s.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from celery import current_app
from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction

from scheduler_app import keeper as keeper_module
from scheduler_app.context import lost_after_seconds, presumed_dead_after_seconds
from scheduler_app.keeper import RunKeeper, until_database_answers
from scheduler_app.lock_services import HolderAlive, clear_job_lock
from scheduler_app.locks import OwnedRedisBackend
from scheduler_app.models import LOST_RUN_ERROR, JobRun
from scheduler_app.registry import get_spec
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 30, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def heartbeat_10s(settings):
    settings.RUN_HEARTBEAT_SECONDS = 10.0


@pytest.fixture
def backend(job_redis):
    return OwnedRedisBackend(settings.CELERY_ONCE["settings"])


def running(job: str, task_id: str, *, heartbeat: dt.datetime | None, started: dt.datetime = NOW, **extra) -> JobRun:
    return JobRun.objects.create(job=job, trigger="manual", status="RUNNING", attempts=1, started_at=started,
                                 heartbeat_at=heartbeat, task_id=task_id, worker="elsewhere:4242", **extra)


def test_the_periods_follow_from_the_setting(heartbeat_10s):
    assert lost_after_seconds() == 30.0
    assert presumed_dead_after_seconds() == 13.5


def test_the_database_refuses_a_second_working_run_of_a_job():
    # given a working run of archive-audit-logs
    running("archive-audit-logs", "a:manual:1", heartbeat=NOW)
    # then a second RUNNING row of the same job is refused by the database itself
    with pytest.raises(IntegrityError), transaction.atomic():
        running("archive-audit-logs", "a:manual:2", heartbeat=NOW)
    # while a dry run, a deferred run and another job's run are not working runs of it
    running("archive-audit-logs", "a:manual:3", heartbeat=NOW, dry_run=True)
    running("archive-audit-logs", "a:manual:4", heartbeat=NOW, deferred_until=NOW + dt.timedelta(hours=1))
    running("update-group-statuses", "u:manual:1", heartbeat=NOW)
    assert JobRun.objects.filter(status="RUNNING").count() == 4


def test_a_run_is_lost_only_when_its_heartbeat_is_three_periods_old(heartbeat_10s):
    # given runs of four jobs whose heartbeats are 29 s and 31 s old, one without any (started 31 s ago),
    # and a deferred run whose deadline has not come, at 02:00:00
    fresh = running("archive-audit-logs", "a:manual:1", heartbeat=NOW - dt.timedelta(seconds=29))
    stale = running("update-group-statuses", "u:manual:1", heartbeat=NOW - dt.timedelta(seconds=31))
    silent = running("prune-job-runs", "p:manual:1", heartbeat=None, started=NOW - dt.timedelta(seconds=31))
    deferred = running("send-contribution-summaries", "s:manual:1", heartbeat=NOW - dt.timedelta(hours=1),
                       deferred_until=NOW + dt.timedelta(seconds=1))
    # when each job's next run looks for lost runs
    for job in ("archive-audit-logs", "update-group-statuses", "prune-job-runs", "send-contribution-summaries"):
        JobRun.objects.mark_lost(job, exclude_task_id="next", now=NOW)
    # then only the stale and the silent runs are lost
    statuses = {r.pk: (r.status, r.error) for r in JobRun.objects.all()}
    assert statuses[fresh.pk] == ("RUNNING", "")
    assert statuses[stale.pk] == ("FAILED", LOST_RUN_ERROR)
    assert statuses[silent.pk] == ("FAILED", LOST_RUN_ERROR)
    assert statuses[deferred.pk] == ("RUNNING", "")
    # and the deferred one is lost once its deadline has passed
    assert JobRun.objects.mark_lost("send-contribution-summaries", exclude_task_id="next",
                                    now=NOW + dt.timedelta(seconds=1)) == 1


def test_a_heartbeat_keeps_a_run_alive_and_fails_once_it_was_judged_lost(heartbeat_10s):
    # given a run whose last heartbeat is 31 s old
    before = dt.datetime.now(UTC)
    run = running("archive-audit-logs", "a:manual:1", heartbeat=before - dt.timedelta(seconds=31))
    # when it writes a heartbeat (the database's clock, so hosts with skewed clocks agree)
    assert JobRun.objects.heartbeat(run.pk) is True
    # then it is alive again for the next run that looks
    assert JobRun.objects.mark_lost("archive-audit-logs", exclude_task_id="next") == 0
    run.refresh_from_db()
    beat = run.heartbeat_at
    slack = dt.timedelta(seconds=2)
    assert beat is not None and before - slack <= beat <= dt.datetime.now(UTC) + slack
    assert (JobRun.objects.silent_seconds(run.pk) or 0.0) < 2
    # and once 31 s have passed without another, it is lost, and its next heartbeat says it must stop
    assert JobRun.objects.mark_lost("archive-audit-logs", exclude_task_id="next",
                                    now=beat + dt.timedelta(seconds=31)) == 1
    assert JobRun.objects.heartbeat(run.pk) is False


def test_a_job_whose_lock_ttl_is_short_is_judged_lost_within_its_ttl(heartbeat_10s):
    # given heartbeats every 10 s, and test-slow's lock TTL of 2 s: its period is 2/3 s, lost after 2 s
    run = running("test-slow", "s:manual:1", heartbeat=NOW)
    assert JobRun.objects.mark_lost("test-slow", exclude_task_id="next", now=NOW + dt.timedelta(seconds=2)) == 0
    assert JobRun.objects.mark_lost("test-slow", exclude_task_id="next",
                                    now=NOW + dt.timedelta(seconds=2.01)) == 1
    assert JobRun.objects.get(pk=run.pk).status == "FAILED"


def test_the_keeper_takes_back_a_lock_that_vanished(backend, job_redis):
    # given a working run holding its lock (TTL 30 s), kept every 0.1 s
    run = running("test-noop", "test-noop:manual:keeper", heartbeat=None)
    key = get_spec("test-noop").lock_key
    backend.raise_or_lock(key, timeout=30, token=run.task_id)
    with RunKeeper(backend, key, run.task_id, 30, run_id=run.pk, job="test-noop", interval=0.1) as keeper:
        # when Redis loses the key (restart without persistence)
        job_redis.delete(key)
        # then the run takes it back under its own token with its full TTL, and goes on
        wait_for(lambda: job_redis.get(key) == run.task_id, 5, message="the lock taken back")
        assert 29_000 < job_redis.pttl(key) <= 30_000
        assert keeper.stop_reason() is None
        # and its heartbeat is written meanwhile
        wait_for(lambda: JobRun.objects.get(pk=run.pk).heartbeat_at is not None, 5, message="a heartbeat")


def test_the_keeper_waits_out_a_holder_the_database_does_not_let_work(backend, job_redis):
    # given a working run whose key was taken, after Redis lost it, by a trigger that has no working run
    run = running("test-noop", "test-noop:manual:mine", heartbeat=None)
    key = get_spec("test-noop").lock_key
    job_redis.set(key, "test-noop:manual:intruder", px=500)
    with RunKeeper(backend, key, run.task_id, 30, run_id=run.pk, job="test-noop", interval=0.1) as keeper:
        time.sleep(0.3)
        # then the run goes on, and takes its lock back once the intruder's key is gone
        assert keeper.stop_reason() is None
        wait_for(lambda: job_redis.get(key) == run.task_id, 5, message="the lock taken back")
        assert keeper.stop_reason() is None


def test_the_keeper_stops_a_run_that_was_judged_lost(backend, job_redis):
    # given a running run that another process judged lost (say its database connection was cut
    # for 3 periods) and whose job a newer run now works on, holding the lock
    run = running("test-noop", "test-noop:manual:old", heartbeat=NOW)
    JobRun.objects.filter(pk=run.pk).update(status="FAILED", error=LOST_RUN_ERROR)
    newer = running("test-noop", "test-noop:manual:new", heartbeat=None)
    key = get_spec("test-noop").lock_key
    job_redis.set(key, newer.task_id, px=30_000)
    with RunKeeper(backend, key, run.task_id, 30, run_id=run.pk, job="test-noop", interval=0.1) as keeper:
        # then the old run is told to stop before its next batch, and leaves the newer run's lock alone
        wait_for(keeper.stop_reason, 5, message="a stop reason")
    assert (keeper.stop_reason() or "").startswith(f"its lock was taken by {newer.task_id}, a working run")
    assert job_redis.get(key) == newer.task_id


def test_a_dead_holder_is_taken_over_at_the_next_send(job_redis, heartbeat_10s):
    # given the lock of test-noop held (TTL 30 s left) by a run whose heartbeat stopped 31 s ago
    task = current_app.tasks[get_spec("test-noop").task_name]
    key = get_spec("test-noop").lock_key
    dead = running("test-noop", "test-noop:manual:dead", heartbeat=dt.datetime.now(UTC) - dt.timedelta(seconds=31))
    job_redis.set(key, dead.task_id, px=30_000)
    # when the job is run (locally: the same send path as run_job)
    result = task.run_locally({"trigger": "manual"})
    # then it is not refused for the 30 s the key had left: the dead run is recorded lost and the new run works
    assert result.state == "SUCCESS" and result.result["status"] == "SUCCEEDED"
    dead.refresh_from_db()
    assert (dead.status, dead.error) == ("FAILED", LOST_RUN_ERROR)
    assert job_redis.get(key) is None


def test_a_live_holder_is_not_taken_over(job_redis, heartbeat_10s):
    # given the lock held by a run whose heartbeat is 29 s old (alive for one more second)
    task = current_app.tasks[get_spec("test-noop").task_name]
    key = get_spec("test-noop").lock_key
    live = running("test-noop", "test-noop:manual:live", heartbeat=dt.datetime.now(UTC) - dt.timedelta(seconds=29))
    job_redis.set(key, live.task_id, px=30_000)
    # then a new run is refused, and the live run keeps its lock and its state
    result = task.run_locally({"trigger": "manual"})
    assert result.state == "REJECTED"
    assert job_redis.get(key) == live.task_id
    assert JobRun.objects.get(pk=live.pk).status == "RUNNING"


def test_a_run_whose_lock_redis_forgot_is_still_fenced_by_the_database(job_redis, heartbeat_10s):
    # given a working run of test-noop with a fresh heartbeat, and Redis has lost its lock
    live = running("test-noop", "test-noop:manual:live", heartbeat=dt.datetime.now(UTC))
    key = get_spec("test-noop").lock_key
    assert job_redis.get(key) is None
    # when a second run is started: Redis lets it take the free lock
    task = current_app.tasks[get_spec("test-noop").task_name]
    result = task.run_locally({"trigger": "manual"})
    # then the database refuses it: SKIPPED lock_held naming the working run, no work done, the lock given back
    assert result.result["status"] == "SKIPPED" and result.result["skip_reason"] == "lock_held"
    skipped = JobRun.objects.get(pk=result.result["run_id"])
    assert skipped.error == f"Held by run {live.pk} on elsewhere:4242, working (its heartbeat is fresh)."
    assert job_redis.llen("testjob:test-noop:attempts") == 0
    assert job_redis.get(key) is None
    assert JobRun.objects.get(pk=live.pk).status == "RUNNING"


def test_clear_lock_tells_a_dead_holder_from_a_live_one_by_its_heartbeat(job_redis, heartbeat_10s):
    spec = get_spec("test-noop")
    # given the lock held by a run with a heartbeat 5 s old
    run = running("test-noop", "test-noop:manual:h", heartbeat=dt.datetime.now(UTC) - dt.timedelta(seconds=5))
    job_redis.set(spec.lock_key, run.task_id, px=600_000)
    # then clearing it is refused, naming the run and its last heartbeat
    with pytest.raises(HolderAlive) as alive:
        clear_job_lock(spec, actor="test")
    assert f"elsewhere:4242 (run {run.pk}, last heartbeat 5s ago)" in str(alive.value)
    # and once the heartbeat is 31 s old (the process is gone, on whatever host), it is cleared without --force
    JobRun.objects.filter(pk=run.pk).update(heartbeat_at=dt.datetime.now(UTC) - dt.timedelta(seconds=31))
    cleared = clear_job_lock(spec, actor="test")
    assert cleared is not None and cleared.token == run.task_id
    assert job_redis.get(spec.lock_key) is None


def test_bookkeeping_waits_for_the_database_and_logs_once(caplog, monkeypatch):
    # given a database step that fails twice with OperationalError (the server is away), then answers
    monkeypatch.setattr(keeper_module.time, "sleep", lambda s: None)
    calls: list[int] = []

    def step() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("connection to server at \"127.0.0.1\", port 5432 failed: Connection refused")
        return "written"

    # then it is tried until it answers, with one warning for the outage and one for the return
    assert until_database_answers(step, what="recording the outcome", job="archive-audit-logs") == "written"
    assert len(calls) == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "scheduler"]
    assert len(warnings) == 2
    assert warnings[0].startswith("Job archive-audit-logs: the database does not answer while recording the outcome "
                                  "(OperationalError: connection to server at")
    assert "answers again after" in warnings[1]


def test_bookkeeping_gives_up_after_its_limit(monkeypatch):
    monkeypatch.setattr(keeper_module.time, "sleep", lambda s: None)

    def down() -> None:
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError):
        until_database_answers(down, what="x", job="j", max_wait_s=0)


def test_a_stop_signal_while_sending_is_handled_once_the_message_is_queued(job_redis, monkeypatch):
    # given a sender (beat, run_job) whose stop signal raises SystemExit, as celery beat's SIGTERM handler does
    import os
    import signal

    from celery.signals import after_task_publish

    task = current_app.tasks[get_spec("test-noop").task_name]
    key = get_spec("test-noop").lock_key
    events: list[str] = []
    take = task.once_backend.raise_or_lock

    def take_then_get_stopped(*args, **kwargs):
        token = take(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between taking the lock and queueing the message
        time.sleep(0.05)
        return token

    def stop(signum, frame):
        events.append("stopped")
        raise SystemExit(f"signal {signum}")

    def published(sender=None, headers=None, **kwargs):
        events.append(f"published {headers['id']}")

    monkeypatch.setattr(task.once_backend, "raise_or_lock", take_then_get_stopped)
    after_task_publish.connect(published, weak=False)
    previous = signal.signal(signal.SIGTERM, stop)
    # and another thread in the process (Sentry's transport, say), which may be the one the signal reaches
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    try:
        # when it is told to stop while sending (to a queue no worker reads)
        with pytest.raises(SystemExit):
            task.apply_async(kwargs={"trigger": "manual"}, queue="test-fence-nobody-consumes")
    finally:
        signal.signal(signal.SIGTERM, previous)
        after_task_publish.disconnect(published)
        idle.set()
    # then the stop came after the message was queued: the lock's holder has its message, no orphan lock
    holder = job_redis.get(key)
    assert holder is not None and holder.startswith("test-noop:manual:")
    assert events == [f"published {holder}", "stopped"]
    job_redis.delete(key)


def test_a_retried_run_counts_the_items_its_failed_attempts_did(job_redis):
    # given test-flaky failing its first attempt after reporting 5 items done (work that stays done),
    # and its second attempt doing 3 (it reports 5 along the way and returns 3)
    job_redis.hset("testjob:test-flaky", mapping={"fail_times": 1, "progress": 5, "items": 3})
    task = current_app.tasks[get_spec("test-flaky").task_name]
    # when it runs (locally: the same attempts and backoff as on a worker)
    result = task.run_locally({"trigger": "manual"})
    # then the run counts 5 + 3 = 8 items over its 2 attempts, not the last attempt's 3
    run = JobRun.objects.get(pk=result.result["run_id"])
    assert (run.status, run.attempts, run.items_processed) == ("SUCCEEDED", 2, 8)
