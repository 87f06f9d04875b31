"""The soak's ten light jobs (``EXTRA_JOB_MODULES=bench.soak_jobs``, set only in the soak's processes).

``soak-01`` … ``soak-10`` are registered through the job registry like any
job (:func:`scheduler_app.jobs.job`); the soak gives each an interval
schedule of 1 s in the database. Each execution of a job's body appends one
JSON line ``{"job", "scheduled_for", "task_id", "attempt", "run_id", "node",
"pid", "at"}`` to the Redis list :data:`EXECUTIONS_KEY`, outside the run
history: a body that ran twice for one scheduled time shows up there even if
``JobRun`` hid it (:mod:`bench.soak` counts both).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import redis
from celery import current_task
from django.conf import settings

from scheduler_app.jobs import JobContext, JobTask, job

#: How many soak jobs there are.
JOB_COUNT = 10
#: The Redis list every execution of a soak job's body is appended to.
EXECUTIONS_KEY = "soak:executions"
#: Lock TTL of the soak jobs in seconds (a run takes milliseconds; renewed every TTL/3 anyway).
LOCK_TTL_S = 10

_client: redis.Redis | None = None


def job_names() -> list[str]:
    """The soak jobs' names, ``soak-01`` … ``soak-10``."""
    return [f"soak-{n:02d}" for n in range(1, JOB_COUNT + 1)]


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


def record_execution(name: str, ctx: JobContext) -> int:
    """Append this execution of job ``name``'s body to :data:`EXECUTIONS_KEY`; return 1 (one item)."""
    request = current_task.request if current_task else None
    _redis().rpush(EXECUTIONS_KEY, json.dumps({
        "job": name,
        "scheduled_for": ctx.scheduled_for.timestamp() if ctx.scheduled_for else None,  # Unix seconds
        "task_id": request.id if request else None,
        "attempt": ctx.attempt,
        "run_id": ctx.run_id,
        "node": request.hostname if request else None,
        "pid": os.getpid(),
        "at": time.time(),  # Unix seconds
    }))
    return 1


def _make_job(name: str) -> JobTask:
    def body(ctx: JobContext) -> int:
        return record_execution(name, ctx)

    # The task name is the function's module path, so each job needs its own function name.
    body.__name__ = body.__qualname__ = name.replace("-", "_")
    body.__doc__ = f"Soak job {name}: records its execution in Redis and does nothing else."
    # The crontab is only the registry's default: the soak gives the job a 1 s interval schedule.
    register: Callable[[Callable[[JobContext], int]], JobTask] = job(name, crontab="0 0 1 1 *", lock_ttl=LOCK_TTL_S)
    return register(body)


#: job name -> its task.
JOBS: dict[str, JobTask] = {name: _make_job(name) for name in job_names()}
