"""Jobs on a real worker: history, log lines, retries with backoff, locks (SPEC §1, §3, §6, §7)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from celery import Task, current_app

from scheduler_app.jobs import get_spec, make_task_id
from scheduler_app.models import JobRun
from tests.jobs import wait_until_finished
from tests.processes import ROOT, process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_job(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python manage.py run_job ...`` in a subprocess against the test database and Redis."""
    return subprocess.run(
        [sys.executable, "manage.py", "run_job", *args], cwd=ROOT, env=process_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def attempts_of(job_redis, name: str) -> list[tuple[float, int, str]]:
    out = []
    for line in job_redis.lrange(f"testjob:{name}:attempts", 0, -1):
        ts, attempt, task_id, _slot, _node = line.split(" ")
        out.append((float(ts), int(attempt), task_id))
    return out


def test_run_job_through_the_worker_records_one_run_and_logs_it(worker, job_redis):
    # given a worker and a job that succeeds with 7 items
    job_redis.hset("testjob:test-noop", "items", 7)
    log_start = len(worker.log())
    # when it is run by hand
    done = run_job("test-noop")
    # then the command exits 0 and one manual run succeeded with 7 items
    run = JobRun.objects.get(job="test-noop")
    assert done.returncode == 0, done.stderr
    assert f"Job test-noop succeeded in {run.duration_ms}ms: 7 items (run {run.pk}, attempt 1/3)" in done.stdout
    assert (run.trigger, run.status, run.attempts, run.items_processed) == ("manual", "SUCCEEDED", 1, 7)
    assert run.scheduled_for is None and run.skip_reason == ""
    assert run.finished_at is not None and run.finished_at >= run.started_at and run.duration_ms is not None
    # hostname:pid of the pool process
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:\d+", run.worker), run.worker
    # and the worker logged the start and success lines of SPEC §7
    wait_until_finished(job_redis, "test-noop", run.task_id)
    log = worker.log()[log_start:]
    assert ("[scheduler] Starting job test-noop (trigger=manual, scheduled=-, lock=acquired, ttl=30s, attempt 1/3)"
            in log)
    assert f"[scheduler] Job test-noop succeeded in {run.duration_ms}ms: 7 items (attempt 1/3)" in log
    # and the lock is gone
    assert job_redis.get(get_spec("test-noop").lock_key) is None


def test_three_attempts_with_one_and_two_second_backoff_and_the_lock_held_between(worker, job_redis):
    # given a job that fails twice, then succeeds
    job_redis.hset("testjob:test-flaky", "fail_times", 2)
    key = get_spec("test-flaky").lock_key
    lock_values: list[str | None] = []
    stop = threading.Event()
    log_start = len(worker.log())

    def watch_lock():
        while not stop.is_set():
            lock_values.append(job_redis.get(key))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_lock)
    watcher.start()
    try:
        # when it is run through the worker
        done = run_job("test-flaky")
    finally:
        stop.set()
        watcher.join()
    # then it took 3 attempts of one task
    assert done.returncode == 0, done.stderr
    attempts = attempts_of(job_redis, "test-flaky")
    assert [a for _, a, _ in attempts] == [1, 2, 3]
    assert len({task_id for _, _, task_id in attempts}) == 1
    task_id = attempts[0][2]
    # and the worker scheduled the 2nd exactly 1 s and the 3rd exactly 2 s after the failure before (no jitter)
    log = worker.log()[log_start:]
    for attempt, countdown in ((1, 1), (2, 2)):
        assert (f"[scheduler] Job test-flaky attempt {attempt}/3 failed: FlakyError: planned failure of test-flaky "
                f"on attempt {attempt}; retrying in {countdown}s") in log
        assert (f"Task tests.jobs.flaky_job[{task_id}] retry: Retry in {countdown}s: "
                f"FlakyError('planned failure of test-flaky on attempt {attempt}')") in log
    assert log.count("; retrying in ") == 2
    # and waited at least that long (an upper bound would measure the machine's load, not the policy)
    first_gap, second_gap = attempts[1][0] - attempts[0][0], attempts[2][0] - attempts[1][0]
    assert first_gap >= 0.95, first_gap
    assert second_gap >= 1.95, second_gap
    # and the lock was held under that task id from before the first attempt to after the last
    held = [v for v in lock_values if v is not None]
    assert held and set(held) == {task_id}
    first_seen = lock_values.index(task_id)
    last_seen = len(lock_values) - 1 - lock_values[::-1].index(task_id)
    assert all(v == task_id for v in lock_values[first_seen:last_seen + 1])
    assert job_redis.get(key) is None
    run = JobRun.objects.get(task_id=task_id)
    assert (run.status, run.attempts) == ("SUCCEEDED", 3)
    assert run.duration_ms is not None and 3000 <= run.duration_ms < 5000


def test_the_retry_countdowns_are_one_then_two_seconds_whatever_the_random_source(job_redis, monkeypatch):
    # given a job that fails twice, run in this process with the worker's retry policy (run_job --local),
    # and Celery's random source pinned to 0, what full jitter (retry_jitter) could draw
    job_redis.hset("testjob:test-flaky", "fail_times", 2)
    monkeypatch.setattr("celery.utils.time.random", SimpleNamespace(randrange=lambda stop: 0))
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # the local run's backoff, recorded instead of waited
    task = current_app.tasks[get_spec("test-flaky").task_name]
    # when it runs
    result = task.run_locally({"trigger": "manual"})
    # then it waited exactly 1 s, then 2 s, and succeeded on attempt 3
    assert waits == [1, 2]
    run = JobRun.objects.get(task_id=result.id)
    assert (run.status, run.attempts) == ("SUCCEEDED", 3)


def test_a_job_failing_three_times_is_failed_with_its_traceback(worker, job_redis):
    # given a job that always fails
    job_redis.hset("testjob:test-flaky", "fail_times", 10)
    log_start = len(worker.log())
    # when it is run
    done = run_job("test-flaky")
    # then the command exits 1 and the run is FAILED after 3 attempts with the error kept
    run = JobRun.objects.get(job="test-flaky")
    assert done.returncode == 1
    assert (f"Job test-flaky failed after 3 attempts (run {run.pk}): "
            f"tests.jobs.FlakyError: planned failure of test-flaky on attempt 3") in done.stderr
    assert (run.status, run.attempts) == ("FAILED", 3)
    assert "Traceback" in run.error and "FlakyError: planned failure of test-flaky on attempt 3" in run.error
    assert len(attempts_of(job_redis, "test-flaky")) == 3
    wait_until_finished(job_redis, "test-flaky", run.task_id)
    failed_line_and_after = worker.log()[log_start:].split(
        f"Job test-flaky failed after 3 attempts in {run.duration_ms}ms: "
        "FlakyError: planned failure of test-flaky on attempt 3\n")
    assert len(failed_line_and_after) == 2, worker.log()[log_start:]
    traceback_lines = re.split(r"\n(?=\d{4}-\d\d-\d\d )", failed_line_and_after[1], maxsplit=1)[0]  # to the next record
    assert traceback_lines.startswith("Traceback (most recent call last)")
    assert traceback_lines.rstrip().endswith("tests.jobs.FlakyError: planned failure of test-flaky on attempt 3")
    assert job_redis.get(get_spec("test-flaky").lock_key) is None


def test_a_second_trigger_while_the_first_runs_is_skipped_with_the_holder(worker, job_redis):
    # given a run that lasts 6 s with a 2 s lock TTL (renewed while it runs)
    job_redis.hset("testjob:test-slow", "sleep", 6)
    first = subprocess.Popen([sys.executable, "manage.py", "run_job", "test-slow"], cwd=ROOT, env=process_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").exists(), 20)
    running = JobRun.objects.get(job="test-slow", status="RUNNING")
    key = get_spec("test-slow").lock_key
    # when a second manual trigger comes once the first TTL would have run out (the first attempt reset it
    # to 2 s when it started) and the first run still holds its lock, renewed
    wait_for(lambda: time.time() > running.started_at.timestamp() + 2.1 and job_redis.get(key) == running.task_id, 10,
             message="the first run to hold its lock past its first TTL")
    second = run_job("test-slow")
    # then it exits 3 and says who holds the lock and until when
    assert second.returncode == 3, second.stderr
    assert f"lock held by run {running.pk} until " in second.stderr
    skipped = JobRun.objects.get(job="test-slow", status="SKIPPED")
    assert skipped.skip_reason == "lock_held"
    # and the first finishes normally, its lock released
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert job_redis.get(get_spec("test-slow").lock_key) is None
    assert len(attempts_of(job_redis, "test-slow")) == 1


def test_an_attempt_refused_the_lock_leaves_the_holders_key_value_and_ttl(worker, job_redis):
    # given test-noop's lock held by another run for 30 s
    task = current_app.tasks[get_spec("test-noop").task_name]
    key = get_spec("test-noop").lock_key
    holder = make_task_id("test-noop", None)
    job_redis.set(key, holder, px=30_000)
    set_at = time.monotonic()
    # when a message of a second run reaches the worker anyway (sent past the sender's lock check)
    # and has been handled to the end, Celery's after_return included
    refused_id = make_task_id("test-noop", None)
    Task.apply_async(task, kwargs={"trigger": "manual"}, task_id=refused_id)
    assert wait_until_finished(job_redis, "test-noop", refused_id) == "SUCCESS"
    # then the holder's key is still there with its value, and its TTL was neither reset nor renewed
    assert job_redis.get(key) == holder
    ttl_ms = job_redis.pttl(key)
    assert 0 < ttl_ms <= 30_000 - (time.monotonic() - set_at) * 1000 + 1
    # and the refused run did no work and is recorded as skipped, naming the holder
    run = JobRun.objects.get(task_id=refused_id)
    assert (run.status, run.skip_reason, run.attempts) == ("SKIPPED", "lock_held", 0)
    assert attempts_of(job_redis, "test-noop") == []
    assert f"[scheduler] Job test-noop skipped: lock held by task {holder} (queued) until " in worker.log()


def test_a_job_running_three_times_its_ttl_keeps_its_lock(worker, job_redis):
    # given a 6 s run of a job whose lock TTL is 2 s
    job_redis.hset("testjob:test-slow", "sleep", 6)
    key = get_spec("test-slow").lock_key
    first = subprocess.Popen([sys.executable, "manage.py", "run_job", "test-slow"], cwd=ROOT, env=process_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").first(), 20)
    # then at every moment of the run the lock holds its task id and never lives longer than the TTL
    samples = []
    while JobRun.objects.filter(pk=run.pk, status="RUNNING").exists():
        samples.append((job_redis.get(key), job_redis.pttl(key)))
        time.sleep(0.2)
    first.communicate(timeout=30)
    during = samples[:-2]
    assert len(during) >= 20
    assert all(value == run.task_id for value, _ in during)
    assert all(0 < ttl <= 2000 for _, ttl in during)
    assert len(attempts_of(job_redis, "test-slow")) == 1


def test_unknown_job_is_a_usage_error_listing_the_valid_names():
    done = run_job("archive-audit-log")
    assert done.returncode == 2
    assert "unknown job 'archive-audit-log'" in done.stderr
    for name in ("archive-audit-logs", "send-contribution-summaries", "update-group-statuses"):
        assert name in done.stderr


def test_clear_lock_leaves_a_running_jobs_lock_and_a_forced_clear_is_taken_back(worker, job_redis):
    # given a run of test-slow in progress on the worker
    job_redis.hset("testjob:test-slow", "sleep", 6)
    first = subprocess.Popen([sys.executable, "manage.py", "run_job", "test-slow"], cwd=ROOT, env=process_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").first(), 20)
    key = get_spec("test-slow").lock_key
    # when an operator clears its lock
    done = subprocess.run([sys.executable, "manage.py", "clear_lock", "test-slow"], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60)
    # then it is refused, naming the worker, and the lock stays
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"not cleared: the holder {re.escape(run.task_id)} is still active on worker \S+:\d+ "
                     rf"\(run {run.pk}, last heartbeat [01]s ago\)", done.stderr), done.stderr
    assert job_redis.get(key) == run.task_id
    # and --force clears it
    forced = subprocess.run([sys.executable, "manage.py", "clear_lock", "test-slow", "--force"], cwd=ROOT,
                            env=process_env(), capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert f"test-slow: lock cleared (was held by {run.task_id})" in forced.stdout
    # but the run is alive, so it takes its lock back within a heartbeat period (1 s in the tests), and a
    # second run is refused meanwhile by the database: a forced clear never lets two runs work at once
    wait_for(lambda: job_redis.get(key) == run.task_id, 5, message="the running run to take its lock back")
    first.communicate(timeout=30)
    assert JobRun.objects.get(pk=run.pk).status == "SUCCEEDED"


def test_clear_lock_leaves_a_local_run_that_renews_its_lock(job_redis):
    # given a `run_job --local` in another process (no worker knows about it)
    job_redis.hset("testjob:test-slow", "sleep", 6)
    local = subprocess.Popen([sys.executable, "manage.py", "run_job", "test-slow", "--local"], cwd=ROOT,
                             env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").first(), 20)
    # when an operator clears its lock
    done = subprocess.run([sys.executable, "manage.py", "clear_lock", "test-slow"], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60)
    # then it is refused and the lock stays with the local run
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"(run {run.pk}, last heartbeat " in done.stderr
    assert job_redis.get(get_spec("test-slow").lock_key) == run.task_id
    assert local.wait(30) == 0


def test_a_local_run_respects_the_soft_time_limit(job_redis):
    # given a job with a 2 s soft time limit that would sleep 10 s
    job_redis.hset("testjob:test-limited", "sleep", 10)
    started = time.monotonic()
    done = run_job("test-limited", "--local")
    # then it is stopped at the soft limit, fails without retrying, and frees its lock
    assert time.monotonic() - started < 8
    run = JobRun.objects.get(job="test-limited")
    assert done.returncode == 1
    assert re.search(rf"Job test-limited failed after 1 attempts \(run {run.pk}\): "
                     r"\S*SoftTimeLimitExceeded: .*soft time limit \(2s\) exceeded", done.stderr), done.stderr
    assert (run.status, run.attempts) == ("FAILED", 1)
    assert "SoftTimeLimitExceeded" in run.error and "soft time limit (2s) exceeded" in run.error.splitlines()[-1]
    assert job_redis.get(get_spec("test-limited").lock_key) is None


def test_sigterm_ends_a_local_run_as_failed_and_frees_the_lock(job_redis):
    import signal

    job_redis.hset("testjob:test-slow", "sleep", 20)
    local = subprocess.Popen([sys.executable, "manage.py", "run_job", "test-slow", "--local"], cwd=ROOT,
                             env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").first(), 20)
    local.send_signal(signal.SIGTERM)
    out, err = local.communicate(timeout=30)
    assert local.returncode == 1
    assert "Traceback" not in err
    assert "[scheduler] Job test-slow interrupted during attempt 1/3 after " in err
    run.refresh_from_db()
    assert run.status == "FAILED" and run.finished_at is not None
    assert run.error.startswith("Interrupted during attempt 1: "), run.error
    assert job_redis.get(get_spec("test-slow").lock_key) is None
