"""The job registry: :func:`job` turns a function into a registered job (SPEC §3).

A job is a plain function over one service, registered with :func:`job`::

    @job("archive-audit-logs", crontab="0 2 * * *", lock_ttl=600)
    def archive_audit_logs_task(ctx: JobContext) -> int:
        return archive_old_logs(dry_run=ctx.dry_run, should_stop=ctx.should_stop)

It becomes a Celery task on :class:`~scheduler_app.task.JobTask` (through
``shared_task``, so this app never imports the project's Celery app) and a
:class:`JobSpec` in :data:`REGISTRY`, from which ``sync_schedules`` creates the
schedules, ``run_job`` finds jobs by name and the lock key is derived.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from celery import current_app, shared_task
from celery_once.helpers import queue_once_key
from django.conf import settings

from scheduler_app.context import MAX_ATTEMPTS, RETRY_BACKOFF_SECONDS, JobContext
from scheduler_app.schedules import parse_crontab
from scheduler_app.task import JobTask


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A registered job.

    Attributes:
        name: the job name, e.g. ``"archive-audit-logs"`` (SPEC §3).
        task_name: the Celery task name (module path of the function).
        crontab: default five-field crontab, read in ``TIME_ZONE``.
        lock_ttl: lock TTL in seconds.
        soft_time_limit / time_limit: Celery time limits in seconds.
        description: one line for the admin.
        catch_up: what beat does with times missed while it was down (SPEC §10):
            ``"skip"`` none, ``"latest"`` the most recent one, ``"all"`` each, oldest first.
        catch_up_limit: with ``"all"``, at most this many (the most recent ones).
    """

    name: str
    task_name: str
    crontab: str
    lock_ttl: int
    soft_time_limit: int
    time_limit: int
    description: str
    catch_up: str = "latest"
    catch_up_limit: int = 10

    @property
    def lock_key(self) -> str:
        """The job's celery-once lock key: one per job, whatever the task's arguments (SPEC §6)."""
        return queue_once_key(self.task_name, {}, [])


#: What beat does with times missed while every beat was down (SPEC §10).
CATCH_UP_POLICIES = ("skip", "latest", "all")

#: job name -> spec, filled as the domain apps' ``tasks`` modules are imported.
REGISTRY: dict[str, JobSpec] = {}


def load_registry() -> dict[str, JobSpec]:
    """Import every installed app's ``tasks`` module (and ``EXTRA_JOB_MODULES``) and return the registry."""
    current_app.loader.import_default_modules()
    current_app.autodiscover_tasks(force=True)
    return REGISTRY


def get_spec(name: str) -> JobSpec:
    """Return the spec of job ``name``.

    Raises:
        KeyError: unknown job; its message lists the valid names.
    """
    registry = load_registry()
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}; valid jobs: {', '.join(sorted(registry))}") from None


def _check_fits_visibility_timeout(name: str, hard_limit: int) -> None:
    """Raise ValueError when ``MAX_ATTEMPTS`` hard-limited attempts plus backoff could outlast
    the broker's visibility timeout.

    A message stays unacknowledged while it waits for its retry countdown or
    sits prefetched behind a running job; if that could outlast Redis's
    visibility timeout, Redis would hand it to a second worker.
    """
    longest = hard_limit * MAX_ATTEMPTS + sum(RETRY_BACKOFF_SECONDS * 2 ** i for i in range(MAX_ATTEMPTS - 1))
    visibility = settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    if longest >= visibility:
        raise ValueError(
            f"job {name!r}: {MAX_ATTEMPTS} attempts of time_limit={hard_limit}s plus backoff ({longest}s) "
            f"must stay below the broker visibility timeout ({visibility}s)"
        )


def job(name: str, *, crontab: str, lock_ttl: int, soft_time_limit: int | None = None,
        time_limit: int | None = None, description: str = "", catch_up: str = "latest",
        catch_up_limit: int = 10) -> Callable[[Callable[[JobContext], Any]], JobTask]:
    """Register a job function as a Celery task on :class:`~scheduler_app.task.JobTask`.

    Args:
        name: job name (SPEC §3), used for the lock, the ``PeriodicTask`` and ``run_job``.
        crontab: default five-field crontab in ``TIME_ZONE`` (``sync_schedules`` creates it).
        lock_ttl: lock TTL in seconds; renewed every TTL/3 while the job runs.
        soft_time_limit / time_limit: seconds; default 6x and 7x the TTL.
        description: one line for the admin; default the function's first docstring line.
        catch_up: ``"skip"``, ``"latest"`` or ``"all"``: the times missed while beat was down
            that beat runs when it is back (SPEC §10); ``catch_up_limit``: at most this many with ``"all"``.
    Returns:
        A decorator; the decorated function becomes the task (its ``job_function``
        is the plain function, callable with a :class:`JobContext` in tests).
    Raises:
        ValueError: bad crontab, non-positive TTL, a time limit not above the
        soft limit, an unknown catch-up policy, limits that could outlast the broker's visibility timeout,
        or a job name registered twice for another task.
    """
    parse_crontab(crontab)
    if lock_ttl <= 0:
        raise ValueError(f"lock_ttl={lock_ttl!r} is invalid: a positive number of seconds")
    soft = soft_time_limit or lock_ttl * 6
    hard = time_limit or lock_ttl * 7
    if hard <= soft:
        raise ValueError(f"time_limit={hard} must be above soft_time_limit={soft}")
    if catch_up not in CATCH_UP_POLICIES or catch_up_limit < 1:
        raise ValueError(f"catch_up={catch_up!r}, catch_up_limit={catch_up_limit!r} is invalid: one of "
                         f"{', '.join(CATCH_UP_POLICIES)}, and a limit of at least 1")
    _check_fits_visibility_timeout(name, hard)

    def decorator(fn: Callable[[JobContext], Any]) -> JobTask:
        task_name = f"{fn.__module__}.{fn.__name__}"
        spec = JobSpec(name=name, task_name=task_name, crontab=crontab, lock_ttl=lock_ttl,
                       soft_time_limit=soft, time_limit=hard,
                       description=description or (fn.__doc__ or "").strip().split("\n")[0],
                       catch_up=catch_up, catch_up_limit=catch_up_limit)
        previous = REGISTRY.get(name)
        if previous is not None and previous.task_name != task_name:
            raise ValueError(f"job {name!r} is already registered for {previous.task_name}")
        REGISTRY[name] = spec
        return shared_task(
            bind=False, base=JobTask, name=task_name, spec=spec, job_function=staticmethod(fn),
            once={"graceful": True, "keys": [], "timeout": lock_ttl},
            soft_time_limit=soft, time_limit=hard,
        )(_task_body(fn))

    return decorator


def _task_body(fn: Callable[[JobContext], Any]) -> Callable[..., Any]:
    """The Celery task's ``run``: calls ``fn`` with the running attempt's :class:`JobContext`."""
    def body(trigger: str = "manual", scheduled_for: str | None = None, dry_run: bool = False):
        return fn(JobTask.current_context())

    body.__name__ = fn.__name__
    body.__doc__ = fn.__doc__
    body.__module__ = fn.__module__
    return body
