"""Exactly one working run per scheduled time, with any number of beats and workers (SPEC §3, §6).

Real ``celery beat -S django`` and ``celery worker`` processes on the test
Redis and database. The test jobs run on interval schedules whose scheduled
times are whole multiples of the interval since the epoch.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import signal
import time
from collections import Counter

import pytest
from celery import Task, current_app
from django.db import IntegrityError, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler_app.jobs import get_spec, iso, make_task_id
from scheduler_app.models import JobRun
from tests.jobs import finished, wait_until_finished
from tests.processes import (
    CeleryProcess,
    node_name,
    require_faketime,
    start_beat,
    start_worker,
    wait_for,
    wait_for_worker,
)

pytestmark = pytest.mark.django_db(transaction=True)
UTC = dt.UTC


def _scheduled(run: JobRun) -> dt.datetime:
    """``run.scheduled_for``, which every run here has (narrowed for the type checker)."""
    assert run.scheduled_for is not None, run
    return run.scheduled_for


def on_interval(job: str, every: int = 1, queue: str | None = None) -> PeriodicTask:
    """Schedule ``job`` every ``every`` seconds (on ``queue``, or Celery's default queue)."""
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(name=job, task=get_spec(job).task_name, interval=interval, queue=queue)


def slots_done(job_redis, job: str) -> list[str]:
    """The scheduled time of every attempt that ran the job's work, in order."""
    return [line.split(" ")[3] for line in job_redis.lrange(f"testjob:{job}:attempts", 0, -1)]


def work_done(job_redis, job: str) -> list[tuple[int, str]]:
    """(scheduled time as Unix seconds, worker node name) of every attempt that ran the job's work."""
    out = []
    for line in job_redis.lrange(f"testjob:{job}:attempts", 0, -1):
        _ts, _attempt, _task_id, slot, node = line.split(" ")
        out.append((int(dt.datetime.fromisoformat(slot).timestamp()), node))
    return out


def task_ids_received(proc: CeleryProcess) -> set[str]:
    return set(re.findall(r"Task \S+\[(\S+)\] received", proc.log()))


def test_one_beat_emits_aligned_scheduled_times(worker, job_redis):
    # given the job on a 1 s interval and one beat
    on_interval("test-noop")
    beat = start_beat("solo")
    try:
        # when beat has triggered 4 runs
        wait_for(lambda: JobRun.objects.filter(job="test-noop", status="SUCCEEDED").count() >= 4, 40)
    finally:
        beat.stop()
    runs = list(JobRun.objects.filter(job="test-noop", status="SUCCEEDED").order_by("scheduled_for"))
    # then every run is a beat run on a whole second, one per second, in a row
    assert all(r.trigger == "beat" and _scheduled(r).microsecond == 0 for r in runs)
    stamps = [int(_scheduled(r).timestamp()) for r in runs]
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))
    assert (f"[scheduler] Starting job test-noop (trigger=beat, scheduled={iso(runs[0].scheduled_for)}, "
            "lock=acquired, ttl=30s, attempt 1/3)") in worker.log()
    beat.cleanup()


def test_three_beats_one_second_apart_two_workers_each_scheduled_time_runs_once(job_redis):
    require_faketime()
    # given two jobs every 2 s whose runs last 1.5 s, longer than the clock skew below
    jobs = ("test-noop", "test-flaky")
    for name in jobs:
        job_redis.hset(f"testjob:{name}", "sleep", 1.5)
        on_interval(name, every=2, queue="beats")
    # and two workers of one process each that take a message only when that process is free, so the
    # two messages of a scheduled time run at once, one on each
    workers = [start_worker(name, concurrency=1, queues="beats", prefetch=False) for name in ("w1", "w2")]
    beats: list[CeleryProcess] = []
    try:
        for proc in workers:
            wait_for_worker(proc)
        # and three beats, one with its clock 1 s ahead: it sends each time early, and the other two send
        # the same time while that run is still going
        beats = [start_beat("fast", faketime="+1s"), start_beat("b2"), start_beat("b3")]
        for beat in beats:
            beat.wait_for_log("Sending due task test-noop (tests.jobs.noop_job)")
        # (from the first scheduled time a second away on, all three send every time: a beat that starts
        # sends the current time late, and the time after it may be refused while that run holds the lock)
        steady = 2 * math.ceil((time.time() + 1) / 2)
        # when each job ran 2 of those times
        wait_for(lambda: all(_working(name, steady).count() >= 2 for name in jobs), 60, message="2 runs of each job")
        # and the fast beat is SIGKILLed just after it sent both jobs' next time (it is idle for a second then:
        # killed while sending, it would leave a lock with no message)
        try:
            wait_for(lambda: all(_working(name, time.time()).exists() for name in jobs), 20)
            fast_sent_early = True
        except AssertionError:
            fast_sent_early = False  # asserted below, after what the runs show
        beats[0].kill(signal.SIGKILL)
        killed_at = time.time()
        # and the other two go on for 2 more scheduled times
        wait_for(lambda: all(_working(name, killed_at + 3).filter(status="SUCCEEDED").exists() for name in jobs), 60,
                 message="runs after the kill")
    finally:
        try:
            for beat in beats:
                beat.stop()
            # (nothing is sent any more: wait until every message sent was handled to the end)
            wait_for(lambda: _all_handled(job_redis, jobs, workers), 30, message="the workers to handle every message")
        finally:
            for proc in workers:
                proc.stop()
    beat_log = "\n".join(beat.log() for beat in beats)
    nodes = set()
    for name in jobs:
        working = list(JobRun.objects.filter(job=name).exclude(status="SKIPPED").order_by("scheduled_for"))
        stamps = [int(_scheduled(r).timestamp()) for r in working]
        work = work_done(job_redis, name)
        ran = Counter(stamp for stamp, _ in work)
        # then the job's work never ran twice for a scheduled time (as the job itself recorded it)
        assert [t for t, n in ran.items() if n > 1] == [], (name, "ran more than once", ran)
        # and every run that did work is one successful beat run of its own scheduled time
        assert [(r.trigger, r.status) for r in working] == [("beat", "SUCCEEDED")] * len(working), name
        assert sorted(ran) == stamps, (name, ran, stamps)
        # and every scheduled time from the steady start on has one, past the kill
        assert [t for t in stamps if t >= steady] == list(range(steady, stamps[-1] + 1, 2)), (name, steady, stamps)
        assert stamps[-1] > killed_at + 3, (name, stamps, killed_at)
        nodes |= {node for _, node in work}
        # and the times after the kill were sent by the two beats left, whose clocks are right
        assert all(r.started_at >= _scheduled(r) for r in working if _scheduled(r).timestamp() > killed_at + 1)
        # and each steady time but the last was sent more than once, the other sends refused by the
        # beats (logged) or skipped by a worker (a SKIPPED row)
        refused = Counter(int(dt.datetime.fromisoformat(t).timestamp()) for t in re.findall(
            rf"Job {name} skipped: scheduled time (\S+) (?:already has a run|is already being run by task \S+) "
            r"\(duplicate trigger\)", beat_log))
        skipped = Counter(int(_scheduled(r).timestamp()) for r in JobRun.objects.filter(job=name, status="SKIPPED"))
        sent_once = [t for t in stamps if steady <= t < stamps[-1] and not refused[t] + skipped[t]]
        assert sent_once == [], (name, sent_once, refused, skipped)
    # and the fast beat did send times before they came (and was killed just after one)
    assert fast_sent_early, "the fast beat never sent a scheduled time before it came"
    # and both workers did the work, told apart by node name
    assert nodes == {proc.node for proc in workers} == {node_name("w1"), node_name("w2")}
    for proc in beats + workers:
        proc.cleanup()


def _working(job: str, from_unix_time: float):
    """The job's runs that do work, for scheduled times from ``from_unix_time`` on."""
    since = dt.datetime.fromtimestamp(from_unix_time, tz=UTC)
    return JobRun.objects.filter(job=job, scheduled_for__gte=since).exclude(status="SKIPPED")


def _all_handled(job_redis, jobs, workers) -> bool:
    """True when no message waits in the queue or in a worker, and every message received has finished."""
    if job_redis.llen("beats") or job_redis.hlen("unacked"):
        return False
    done = {task_id for name in jobs for task_id, state in finished(job_redis, name) if state != "RETRY"}
    return all(task_ids_received(proc) <= done for proc in workers)


def test_the_database_holds_one_working_run_per_scheduled_time():
    # given a scheduled time of test-noop that has its run
    slot = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def record(task_id: str, status: str, job: str = "test-noop", scheduled_for=slot) -> JobRun:
        return JobRun.objects.create(job=job, trigger="beat", scheduled_for=scheduled_for, status=status,
                                     started_at=slot, task_id=task_id)

    record("first", "SUCCEEDED")
    # then any number of SKIPPED duplicates, another job's run and another time's run can be recorded
    record("dup-1", "SKIPPED")
    record("dup-2", "SKIPPED")
    record("other-job", "RUNNING", job="test-flaky")
    record("next-time", "RUNNING", scheduled_for=slot + dt.timedelta(minutes=1))
    # but no second run that works, whatever its state (the last guard when two deliveries race)
    for status in ("RUNNING", "SUCCEEDED", "FAILED"):
        with pytest.raises(IntegrityError), transaction.atomic():
            record(f"second-{status}", status)
    assert JobRun.objects.filter(job="test-noop", scheduled_for=slot).exclude(status="SKIPPED").count() == 1


def test_a_redelivered_message_for_a_finished_scheduled_time_does_no_work(worker, job_redis):
    # given scheduled time 2026-11-30T10:00:00Z of test-noop has run
    task = worker_task = current_app.tasks[get_spec("test-noop").task_name]
    slot = dt.datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    first = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    wait_for(lambda: JobRun.objects.filter(task_id=first.id, status="SUCCEEDED").exists(), 30)
    # when the same message is delivered again, and another message for the same time
    # arrives with a new id (both bypass the sender's checks, as a redelivery does)
    Task.apply_async(worker_task, kwargs={"trigger": "beat", "scheduled_for": iso(slot)}, task_id=first.id)
    other_id = make_task_id("test-noop", slot)
    Task.apply_async(worker_task, kwargs={"trigger": "beat", "scheduled_for": iso(slot)}, task_id=other_id)
    wait_until_finished(job_redis, "test-noop", first.id, times=2)
    wait_until_finished(job_redis, "test-noop", other_id)
    # then the work ran once; the second message is a SKIPPED duplicate; the lock is free
    assert slots_done(job_redis, "test-noop") == [slot.isoformat()]
    assert JobRun.objects.get(task_id=first.id).status == "SUCCEEDED"
    duplicate = JobRun.objects.get(task_id=other_id)
    assert (duplicate.status, duplicate.skip_reason) == ("SKIPPED", "duplicate")
    assert JobRun.objects.filter(job="test-noop").count() == 2
    assert job_redis.get(get_spec("test-noop").lock_key) is None
    # and a beat that sends it once more is refused before queueing
    again = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    assert again.state == "REJECTED"


def test_a_worker_killed_mid_job_its_lock_expires_and_the_next_run_goes_ahead(worker, job_redis):
    # given a run of test-slow (lock TTL 2 s, renewed while it runs) on a worker of its own queue
    job_redis.hset("testjob:test-slow", "sleep", 30)
    victim = start_worker("victim", concurrency=1, queues="victim")
    try:
        wait_for_worker(victim)
        task = current_app.tasks[get_spec("test-slow").task_name]
        first = task.apply_async(kwargs={"trigger": "manual"}, queue="victim")
        run = wait_for(lambda: JobRun.objects.filter(task_id=first.id, status="RUNNING").first(), 30)
        key = get_spec("test-slow").lock_key
        assert job_redis.get(key) == first.id
        # when the worker is SIGKILLed in the middle of the job
        victim.kill(signal.SIGKILL)
        victim.proc.wait(5)
    finally:
        victim.stop()
        victim.cleanup()
    # then nobody renews the lock any more: at most its 2 s TTL is left, only counting down, until Redis drops it
    ttls: list[int] = []

    def expired() -> bool:
        ttl = job_redis.pttl(key)
        if ttl == -2:
            return True
        ttls.append(ttl)
        return False

    wait_for(expired, 10, interval=0.05, message="the dead run's lock to expire")
    assert ttls and 0 < ttls[0] <= 2000 and ttls == sorted(ttls, reverse=True), ttls
    # and once the dead run's heartbeat is 3 periods (3 x 1 s in the tests) old, the next run goes ahead
    # on the surviving worker (the database, not the vanished key, judges the old run lost)
    wait_for(lambda: JobRun.objects.holder_is_dead(first.id) is not None, 10, message="a stale heartbeat")
    job_redis.hset("testjob:test-slow", "sleep", 0)
    second = task.apply_async(kwargs={"trigger": "manual"})
    assert second.state != "REJECTED"
    wait_for(lambda: JobRun.objects.filter(task_id=second.id, status="SUCCEEDED").exists(), 30)
    # and the killed run is visible as such in the history
    run.refresh_from_db()
    assert run.status == "FAILED" and run.finished_at is not None
    assert run.error.startswith("Worker lost: the run stopped sending heartbeats")


def test_a_duplicate_that_took_the_free_lock_releases_it(worker, job_redis):
    # given scheduled time 10:05 of test-noop has run
    task = current_app.tasks[get_spec("test-noop").task_name]
    slot = dt.datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
    first = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    wait_for(lambda: JobRun.objects.filter(task_id=first.id, status="SUCCEEDED").exists(), 30)
    # when a second beat's message for 10:05 took the then free lock and reaches a worker
    late_id = make_task_id("test-noop", slot)
    key = get_spec("test-noop").lock_key
    job_redis.set(key, late_id, px=30_000)
    Task.apply_async(task, kwargs={"trigger": "beat", "scheduled_for": iso(slot)}, task_id=late_id)
    wait_for(lambda: JobRun.objects.filter(task_id=late_id).exists(), 30)
    # then it does no work and gives the lock back at once, not after the 30 s TTL
    wait_for(lambda: job_redis.get(key) is None, 5, message="the duplicate to release its lock")
    assert JobRun.objects.get(task_id=late_id).skip_reason == "duplicate"
    assert slots_done(job_redis, "test-noop") == [slot.isoformat()]


def test_an_expired_message_releases_its_lock_and_is_recorded(worker, job_redis):
    # given a manual run sent with an expiry that has passed when a worker gets it
    task = current_app.tasks[get_spec("test-noop").task_name]
    result = task.apply_async(kwargs={"trigger": "manual"}, expires=dt.datetime.now(UTC) - dt.timedelta(seconds=1))
    key = get_spec("test-noop").lock_key
    # then the worker releases the lock and records the run as failed, with why
    run = wait_for(lambda: JobRun.objects.filter(task_id=result.id).first(), 30)
    assert (run.status, run.error) == ("FAILED", "Revoked: expired before a worker started it.")
    wait_for(lambda: job_redis.get(key) is None, 5)
    assert slots_done(job_redis, "test-noop") == []


def test_the_admins_run_selected_tasks_is_a_manual_run(worker, job_redis):
    # given the schedule row; the admin's action sends the task with the periodic_task_name header only
    on_interval("test-noop").delete()
    task = current_app.tasks[get_spec("test-noop").task_name]
    result = task.apply_async(headers={"periodic_task_name": "test-noop"})
    # then it runs now, as a manual run
    assert result.state != "REJECTED"
    wait_for(lambda: JobRun.objects.filter(task_id=result.id, status="SUCCEEDED").exists(), 30)
    run = JobRun.objects.get(task_id=result.id)
    assert run.trigger == "manual" and run.scheduled_for is None


def test_a_trigger_refused_while_an_earlier_run_held_the_lock_becomes_a_duplicate_once_its_time_runs(worker, job_redis):
    # given the lock held by a run of an earlier time, so beat A's trigger for 11:00 is refused (lock_held)
    task = current_app.tasks[get_spec("test-noop").task_name]
    slot = dt.datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    key = get_spec("test-noop").lock_key
    job_redis.set(key, make_task_id("test-noop", slot - dt.timedelta(hours=1)), px=30_000)
    refused = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    assert refused.state == "REJECTED"
    assert JobRun.objects.get(task_id=refused.id).skip_reason == "lock_held"
    # when the earlier run ends and beat B sends 11:00 again, which runs
    job_redis.delete(key)
    ran = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    wait_for(lambda: JobRun.objects.filter(task_id=ran.id, status="SUCCEEDED").exists(), 30)
    # then 11:00 shows one run and one duplicate
    assert JobRun.objects.get(task_id=refused.id).skip_reason == "duplicate"
