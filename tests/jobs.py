"""Jobs that exist only for the tests (registered through ``EXTRA_JOB_MODULES=tests.jobs``).

Their behaviour is steered through Redis, because they run inside real
worker processes: the hash ``testjob:<name>`` holds ``fail_times`` (attempts
that raise before one succeeds, counted across runs), ``sleep`` (seconds per
attempt), ``progress`` (items each attempt reports done before it may fail) and ``items``; every attempt appends
``<unix time> <attempt> <task id> <scheduled time or -> <worker node name or ->``
to the list ``testjob:<name>:attempts`` (the node name is the worker's ``-n``,
e.g. ``shared@host``: ``JobRun.worker`` holds only the pool process's
``hostname:pid``). After a job's message has been handled to the end, Celery's
``after_return`` (where the lock is released) included, ``<task id> <state>``
is appended to ``testjob:<name>:finished``: a signal the tests wait for
instead of sleeping.
"""

from __future__ import annotations

import time
from typing import cast

import redis
from celery import signals
from django.conf import settings

from scheduler_app.jobs import JobContext, job
from scheduler_app.redis_urls import client_from_url
from tests.processes import wait_for


class FlakyError(RuntimeError):
    """The error a steered test job raises."""


def _redis() -> redis.Redis:
    # Through redis_urls: the worker's REDIS_URL may name Redis Sentinel (tests/scheduler/test_redis_sentinel.py).
    return client_from_url(settings.REDIS_URL, decode_responses=True)


def _behave(name: str, ctx: JobContext) -> int:
    r = _redis()
    from celery import current_task

    task_id = current_task.request.id if current_task else "-"
    node = (current_task.request.hostname if current_task else None) or "-"
    slot = ctx.scheduled_for.isoformat() if ctx.scheduled_for else "-"
    r.rpush(f"testjob:{name}:attempts", f"{time.time():.6f} {ctx.attempt} {task_id} {slot} {node}")
    config = r.hgetall(f"testjob:{name}")
    sleep = float(config.get("sleep", 0))
    if sleep:
        time.sleep(sleep)
    if config.get("progress"):
        ctx.report_progress(int(config["progress"]), force=True)
    if int(config.get("fail_times", 0)) > 0 and r.hincrby(f"testjob:{name}", "fail_times", -1) >= 0:
        raise FlakyError(f"planned failure of {name} on attempt {ctx.attempt}")
    r.rpush(f"testjob:{name}:done", f"{time.time():.6f} {task_id}")
    return int(config.get("items", 1))


@job("test-noop", crontab="0 0 1 1 *", lock_ttl=30)
def noop_job(ctx: JobContext) -> int:
    """Does nothing but record itself."""
    return _behave("test-noop", ctx)


@job("test-flaky", crontab="0 0 1 1 *", lock_ttl=30)
def flaky_job(ctx: JobContext) -> int:
    """Fails as many times as told, then succeeds."""
    return _behave("test-flaky", ctx)


@job("test-slow", crontab="0 0 1 1 *", lock_ttl=2, soft_time_limit=60, time_limit=70)
def slow_job(ctx: JobContext) -> int:
    """Sleeps as long as told with a 2 s lock TTL (renewed while it runs)."""
    return _behave("test-slow", ctx)


@job("test-limited", crontab="0 0 1 1 *", lock_ttl=5, soft_time_limit=2, time_limit=3)
def limited_job(ctx: JobContext) -> int:
    """Sleeps as long as told, with a 2 s soft and 3 s hard time limit."""
    return _behave("test-limited", ctx)


# Jobs with a catch-up policy other than the default ``latest`` (SPEC §10),
# for tests/scheduler/test_schedule_rules.py: beat sends them after downtime;
# no test runs them on a worker.
@job("test-catchup-skip", crontab="0 0 1 1 *", lock_ttl=30, catch_up="skip")
def catchup_skip_job(ctx: JobContext) -> int:
    """Catch-up policy skip: no missed time is run."""
    return _behave("test-catchup-skip", ctx)


@job("test-catchup-all", crontab="0 0 1 1 *", lock_ttl=30, catch_up="all", catch_up_limit=10)
def catchup_all_job(ctx: JobContext) -> int:
    """Catch-up policy all: every missed time, oldest first, at most 10."""
    return _behave("test-catchup-all", ctx)


@job("test-catchup-all-2", crontab="0 0 1 1 *", lock_ttl=30, catch_up="all", catch_up_limit=2)
def catchup_all_2_job(ctx: JobContext) -> int:
    """Catch-up policy all with a limit of 2: the 2 most recent missed times."""
    return _behave("test-catchup-all-2", ctx)


def finished(client: redis.Redis, name: str) -> list[tuple[str, str]]:
    """``(task id, state)`` of every message of job ``name`` handled to the end (RETRY: one attempt of it)."""
    # the clients here decode responses (decode_responses=True): the entries are str, not bytes
    entries = cast(list[str], client.lrange(f"testjob:{name}:finished", 0, -1))
    return [cast(tuple[str, str], tuple(line.split(" "))) for line in entries]


def wait_until_finished(client: redis.Redis, name: str, task_id: str, timeout: float = 30, times: int = 1) -> str:
    """Wait until message ``task_id`` was handled to the end ``times`` times (retries aside); return its last state."""
    def state():
        states = [s for t, s in finished(client, name) if t == task_id and s != "RETRY"]
        return states[-1] if len(states) >= times else None

    return wait_for(state, timeout, message=f"task {task_id} of {name} to finish {times}x")


@signals.task_postrun.connect
def _record_finished(sender=None, task_id=None, state=None, **kwargs) -> None:
    """Sent after ``after_return`` in the process that ran the message (worker child or ``--local``)."""
    spec = getattr(sender, "spec", None)
    if spec is not None:
        _redis().rpush(f"testjob:{spec.name}:finished", f"{task_id} {state}")
