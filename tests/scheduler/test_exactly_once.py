"""Exactly one working run per scheduled time, with any number of beats and workers (SPEC §3, §6).

Real ``celery beat -S django`` and ``celery worker`` processes on the test
Redis and database. The test job ``test-noop`` runs on a 1 s interval
schedule whose scheduled times are whole seconds since the epoch.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import time
from collections import Counter

import pytest
from celery import Task
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler_app.jobs import get_spec, iso, make_task_id
from scheduler_app.models import JobRun
from tests.processes import start_beat, start_worker, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)
UTC = dt.timezone.utc


def every_second(job: str) -> PeriodicTask:
    interval, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(name=job, task=get_spec(job).task_name, interval=interval)


def slots_done(job_redis, job: str) -> list[str]:
    """The scheduled time of every attempt that ran the job's work, in order."""
    return [line.split(" ")[3] for line in job_redis.lrange(f"testjob:{job}:attempts", 0, -1)]


def test_one_beat_emits_aligned_scheduled_times(worker, job_redis):
    # given the job on a 1 s interval and one beat
    every_second("test-noop")
    beat = start_beat("solo")
    try:
        # when beat has triggered 4 runs
        wait_for(lambda: JobRun.objects.filter(job="test-noop", status="SUCCEEDED").count() >= 4, 40)
    finally:
        beat.stop()
    runs = list(JobRun.objects.filter(job="test-noop", status="SUCCEEDED").order_by("scheduled_for"))
    # then every run is a beat run on a whole second, one per second, in a row
    assert all(r.trigger == "beat" and r.scheduled_for.microsecond == 0 for r in runs)
    stamps = [int(r.scheduled_for.timestamp()) for r in runs]
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))
    assert "Starting job test-noop (trigger=beat, scheduled=" in worker.log()
    beat.cleanup()


@pytest.mark.skipif(shutil.which("faketime") is None, reason="libfaketime (Debian package faketime) is not installed")
def test_three_beats_one_second_apart_two_workers_each_scheduled_time_runs_once(worker, job_redis):
    # given three beats, one of them with its clock 1 s ahead, and two workers, on a 1 s schedule
    job_redis.hset("testjob:test-noop", "sleep", 0.1)
    every_second("test-noop")
    second_worker = start_worker("second", concurrency=2)
    wait_for_worker(second_worker)
    beats = [start_beat("fast", faketime="+1s"), start_beat("b2"), start_beat("b3")]
    try:
        # when they run for at least 12 scheduled times, then the fast beat is SIGKILLed
        wait_for(lambda: JobRun.objects.filter(job="test-noop", status="SUCCEEDED").count() >= 12, 60)
        beats[0].kill(signal.SIGKILL)
        killed_at = time.time()
        # and the other two go on for at least 10 more
        wait_for(lambda: JobRun.objects.filter(job="test-noop", status="SUCCEEDED").count() >= 24, 60)
    finally:
        for beat in beats:
            beat.stop()
        time.sleep(1.5)  # let the last messages finish
        second_worker.stop()
    # then each scheduled time did its work exactly once, and none in the range was missed
    working = list(JobRun.objects.filter(job="test-noop").exclude(status="SKIPPED").order_by("scheduled_for"))
    assert all(r.status == "SUCCEEDED" for r in working), [(r.scheduled_for, r.status, r.error) for r in working]
    stamps = [int(r.scheduled_for.timestamp()) for r in working]
    if stamps != list(range(stamps[0], stamps[-1] + 1)):
        _debug_dump()
        for beat in beats:
            print(beat.kind, beat.log()[-6000:])
    assert len(stamps) >= 22
    assert len(set(stamps)) == len(stamps)
    assert stamps == list(range(stamps[0], stamps[-1] + 1)), "a scheduled time was missed"
    assert stamps[-1] > killed_at + 5  # scheduled times after the kill were covered by the other beats
    work = Counter(slots_done(job_redis, "test-noop"))
    assert work and max(work.values()) == 1, [s for s, n in work.items() if n > 1]
    assert len(work) == len(stamps)
    # and both workers took part
    workers = {r.worker.split(":")[0] for r in working}
    assert workers  # hostnames are the same machine; the pids differ
    assert len({r.worker for r in working}) >= 2
    for beat in beats:
        beat.cleanup()
    second_worker.cleanup()


def test_a_redelivered_message_for_a_finished_scheduled_time_does_no_work(worker, job_redis):
    # given scheduled time 2026-11-30T10:00:00Z of test-noop has run
    task = worker_task = __import__("celery").current_app.tasks[get_spec("test-noop").task_name]
    slot = dt.datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    first = task.apply_async(kwargs={"trigger": "beat", "scheduled_for": iso(slot)})
    wait_for(lambda: JobRun.objects.filter(task_id=first.id, status="SUCCEEDED").exists(), 30)
    # when the same message is delivered again, and another message for the same time
    # arrives with a new id (both bypass the sender's checks, as a redelivery does)
    Task.apply_async(worker_task, kwargs={"trigger": "beat", "scheduled_for": iso(slot)}, task_id=first.id)
    other_id = make_task_id("test-noop", slot)
    Task.apply_async(worker_task, kwargs={"trigger": "beat", "scheduled_for": iso(slot)}, task_id=other_id)
    wait_for(lambda: JobRun.objects.filter(task_id=other_id).exists(), 30)
    time.sleep(1.0)
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
    # given a run of test-slow (lock TTL 2 s) on a worker of its own
    job_redis.hset("testjob:test-slow", "sleep", 30)
    victim = start_worker("victim", concurrency=1)
    wait_for_worker(victim)
    # (the worker consumes the "victim" queue only, so the shared worker cannot take it)
    victim.stop()
    victim = __import__("tests.processes", fromlist=["CeleryProcess"]).CeleryProcess(
        "worker-victim2",
        ["worker", "-l", "INFO", "-c", "1", "-n", "victim2@%h", "-Q", "victim", "--without-gossip", "--without-mingle"],
        __import__("tests.processes", fromlist=["process_env"]).process_env(),
    )
    wait_for_worker(victim)
    task = __import__("celery").current_app.tasks[get_spec("test-slow").task_name]
    first = task.apply_async(kwargs={"trigger": "manual"}, queue="victim")
    run = wait_for(lambda: JobRun.objects.filter(task_id=first.id, status="RUNNING").first(), 30)
    key = get_spec("test-slow").lock_key
    assert job_redis.get(key) == first.id
    # when the worker is SIGKILLed in the middle of the job
    victim.kill(signal.SIGKILL)
    killed = time.monotonic()
    # then the lock expires within its TTL
    wait_for(lambda: job_redis.get(key) is None, 5)
    assert time.monotonic() - killed <= 2.5
    # and the next run goes ahead on the surviving worker
    job_redis.hset("testjob:test-slow", "sleep", 0)
    second = task.apply_async(kwargs={"trigger": "manual"})
    assert second.state != "REJECTED"
    wait_for(lambda: JobRun.objects.filter(task_id=second.id, status="SUCCEEDED").exists(), 30)
    # and the killed run is visible as such in the history
    run.refresh_from_db()
    assert run.status == "FAILED" and run.finished_at is not None
    assert "Worker lost" in run.error
    victim.stop()
    victim.cleanup()


def _debug_dump():  # pragma: no cover - debugging aid
    for r in JobRun.objects.filter(job="test-noop").order_by("scheduled_for", "started_at"):
        print(r.scheduled_for, r.status, r.skip_reason, r.task_id, r.worker, r.started_at)


def test_a_duplicate_that_took_the_free_lock_releases_it(worker, job_redis):
    # given scheduled time 10:05 of test-noop has run
    task = __import__("celery").current_app.tasks[get_spec("test-noop").task_name]
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
    task = __import__("celery").current_app.tasks[get_spec("test-noop").task_name]
    result = task.apply_async(kwargs={"trigger": "manual"}, expires=dt.datetime.now(UTC) - dt.timedelta(seconds=1))
    key = get_spec("test-noop").lock_key
    # then the worker releases the lock and records the run as failed, with why
    run = wait_for(lambda: JobRun.objects.filter(task_id=result.id).first(), 30)
    assert run.status == "FAILED" and "expired" in run.error
    wait_for(lambda: job_redis.get(key) is None, 5)
    assert slots_done(job_redis, "test-noop") == []


def test_the_admins_run_selected_tasks_is_a_manual_run(worker, job_redis):
    # given the schedule row; the admin's action sends the task with the periodic_task_name header only
    every_second("test-noop").delete()
    task = __import__("celery").current_app.tasks[get_spec("test-noop").task_name]
    result = task.apply_async(headers={"periodic_task_name": "test-noop"})
    # then it runs now, as a manual run
    assert result.state != "REJECTED"
    wait_for(lambda: JobRun.objects.filter(task_id=result.id, status="SUCCEEDED").exists(), 30)
    run = JobRun.objects.get(task_id=result.id)
    assert run.trigger == "manual" and run.scheduled_for is None


def test_a_trigger_refused_while_an_earlier_run_held_the_lock_becomes_a_duplicate_once_its_time_runs(worker, job_redis):
    # given the lock held by a run of an earlier time, so beat A's trigger for 11:00 is refused (lock_held)
    task = __import__("celery").current_app.tasks[get_spec("test-noop").task_name]
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
