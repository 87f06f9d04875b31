"""Local runs: a job run in the calling process (``run_job --local``), for when no worker is up (SPEC §1).

The run goes through the same path as on a worker: the lock taken under a
task id, the ``JobRun`` history, the retries with the same backoff (waited
out in this process) and the job's soft and hard time limits, applied with
``SIGALRM`` as a prefork worker would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from celery.result import EagerResult

    from scheduler_app.registry import JobSpec
    from scheduler_app.task import JobTask


def run_locally(task: JobTask, kwargs: dict | None = None) -> EagerResult:
    """Run ``task`` in this process under its lock, retries, time limits and history.

    Args:
        task: a registered job's task.
        kwargs: task kwargs (``trigger``, ``dry_run``, ``scheduled_for``).
    Returns:
        The ``EagerResult``; in state REJECTED when the lock is held or the
        scheduled time already has a run.
    """
    task_id, kwargs, rejected = task.reserve(kwargs)
    if rejected is not None:
        return rejected
    try:
        with local_time_limits(task.spec):
            return task.apply(kwargs=kwargs, task_id=task_id)
    finally:
        task.once_backend.clear_lock(task.spec.lock_key, token=task_id)


@contextlib.contextmanager
def local_time_limits(spec: JobSpec) -> Iterator[None]:
    """Apply the job's soft and hard time limits (seconds) to a run in this process, as a worker would.

    SIGALRM raises ``SoftTimeLimitExceeded`` after ``soft_time_limit`` and
    ``TimeLimitExceeded`` ``time_limit - soft_time_limit`` later. Only in the
    main thread (signals); elsewhere the run has no limit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    phase = {"now": "soft"}

    def on_alarm(signum, frame):
        if phase["now"] == "soft":
            phase["now"] = "hard"
            signal.setitimer(signal.ITIMER_REAL, spec.time_limit - spec.soft_time_limit)
            raise SoftTimeLimitExceeded(f"soft time limit ({spec.soft_time_limit}s) exceeded")
        raise TimeLimitExceeded(spec.time_limit)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, spec.soft_time_limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
