"""The job registry and the base task every job runs on (SPEC §3, §6, §7).

A job is a plain function over one service, registered with :func:`job`::

    @job("archive-audit-logs", crontab="0 2 * * *", lock_ttl=600)
    def archive_audit_logs_task(ctx: JobContext) -> int:
        return archive_old_logs(dry_run=ctx.dry_run, should_stop=ctx.should_stop)

It becomes a Celery task on :class:`JobTask`, a celery-once ``QueueOnce``
subclass. What every run of every job does:

1. **Send** (``apply_async``, in beat or ``run_job``): the task id is made
   first (``<job>:<scheduled time or "manual">:<random>``) and the job's lock
   (one celery-once key per job) is taken with that id as its token. If the
   lock is held, nothing is queued: the skip is logged with the holder and the
   expiry, and recorded as a SKIPPED ``JobRun`` (``lock_held``) unless the
   holder is a run for the same scheduled time (then it is a duplicate send
   by a second beat and only logged).
2. **Start** (worker, each attempt): the worker confirms it still holds the
   lock under its task id (or takes it if it expired while queued), records
   the run (the first attempt inserts the ``JobRun`` row; the database's
   one-working-run-per-scheduled-time constraint turns a duplicate into a
   SKIPPED ``duplicate`` row without doing any work), marks runs of the same
   job that lost their lock as failed (their worker died), then runs the job
   function with the lock renewed every TTL/3.
3. **Retry**: ``autoretry_for=(Exception,)``, ``max_retries=2``,
   ``retry_backoff=1``, ``retry_jitter=False``: 3 attempts, the 2nd 1 s after
   the first failure, the 3rd 2 s after the second. The lock stays held
   through the backoff (celery-once's ``after_return`` is not called for
   RETRY).
4. **Finish**: the row gets its outcome, the lock is released by
   compare-and-delete on the task id, a failed run is logged with its
   traceback and reaches Sentry once (the Celery integration reports only the
   final attempt's exception).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from celery import Task, signals, states
from celery.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import EagerResult
from celery_once import QueueOnce
from celery_once.helpers import queue_once_key
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from scheduler_app.locks import (
    CLAIM_HELD_ALREADY,
    CLAIM_REFUSED,
    LockHeld,
    LockRenewer,
    OwnedRedisBackend,
)
from scheduler_app.schedules import parse_crontab

logger = logging.getLogger("scheduler")

MAX_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 1


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
    """

    name: str
    task_name: str
    crontab: str
    lock_ttl: int
    soft_time_limit: int
    time_limit: int
    description: str

    @property
    def lock_key(self) -> str:
        return queue_once_key(self.task_name, {}, [])


#: job name -> spec, filled as the domain apps' ``tasks`` modules are imported.
REGISTRY: dict[str, JobSpec] = {}


def load_registry() -> dict[str, JobSpec]:
    """Import every installed app's ``tasks`` module and return the registry."""
    from config.celery import app

    app.loader.import_default_modules()
    app.autodiscover_tasks(force=True)
    return REGISTRY


def get_spec(name: str) -> JobSpec:
    """Return the spec of job ``name``; raise KeyError listing the valid names when unknown."""
    registry = load_registry()
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}; valid jobs: {', '.join(sorted(registry))}") from None


def make_task_id(job_name: str, scheduled_for: dt.datetime | None) -> str:
    """Task id of one message: ``<job>:<YYYYmmddTHHMMSSZ|manual>:<32 hex>`` (also the lock token)."""
    slot = scheduled_for.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") if scheduled_for else "manual"
    return f"{job_name}:{slot}:{uuid.uuid4().hex}"


def slot_of_task_id(task_id: str) -> str | None:
    """The scheduled-time part of a task id made by :func:`make_task_id` (None for others)."""
    parts = task_id.split(":")
    return parts[1] if len(parts) == 3 else None


def iso(moment: dt.datetime | None) -> str:
    """``2026-11-30T02:00:00Z`` for an aware datetime; ``-`` for None."""
    if moment is None:
        return "-"
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@dataclasses.dataclass
class JobContext:
    """What a job function gets: the run it belongs to and how to behave.

    Attributes:
        spec: the job's :class:`JobSpec`.
        run_id: primary key of the ``JobRun`` row.
        trigger: ``"beat"`` or ``"manual"``.
        scheduled_for: the scheduled time (aware UTC) or None for manual runs.
        attempt: 1-based attempt number.
        dry_run: report what would change and change nothing.
        logger: the job's logger (``scheduler``).
    """

    spec: JobSpec
    run_id: int
    trigger: str
    scheduled_for: dt.datetime | None
    attempt: int
    dry_run: bool
    deadline: float | None = None  # time.monotonic() value after which should_stop() is True
    logger: logging.Logger = logger

    def should_stop(self) -> bool:
        """True when the job should stop between batches: its soft time limit is near.

        The budget is ``soft_time_limit`` minus 10% (at least 5 s) from the
        attempt's start; work left over is done by the next run.
        """
        return self.deadline is not None and time.monotonic() >= self.deadline


def worker_name() -> str:
    """``hostname:pid`` of this process (stored on each run)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobTask(QueueOnce):
    """Base task of every job: celery-once lock with an owner, retries, run history.

    Task kwargs (all optional): ``trigger`` (``"beat"``/``"manual"``),
    ``scheduled_for`` (ISO 8601 UTC string), ``dry_run`` (bool).
    """

    abstract = True
    typing = False
    spec: JobSpec
    job_function: Callable[[JobContext], int | None]

    autoretry_for = (Exception,)
    dont_autoretry_for = (SoftTimeLimitExceeded, TimeLimitExceeded)
    max_retries = MAX_ATTEMPTS - 1
    retry_backoff = RETRY_BACKOFF_SECONDS
    retry_backoff_max = 600
    retry_jitter = False
    acks_late = False

    # -- celery-once hooks ---------------------------------------------------

    @property
    def once_backend(self) -> OwnedRedisBackend:  # type: ignore[override]
        backend = getattr(type(self), "_backend_instance", None)
        if backend is None:
            backend = OwnedRedisBackend(self.once_config["settings"])
            type(self)._backend_instance = backend
        return backend

    def get_key(self, args=None, kwargs=None) -> str:
        """One lock per job, whatever the kwargs (SPEC §6)."""
        return self.spec.lock_key

    def reserve(self, kwargs: dict | None = None, headers: dict | None = None, task_id: str | None = None):
        """Prepare one run and take the job's lock for it (module docstring, step 1).

        Args:
            kwargs: task kwargs (``trigger``, ``scheduled_for``, ``dry_run``).
            headers: message headers; ``periodic_task_name`` marks a beat trigger.
            task_id: use this id instead of making one.
        Returns:
            ``(task_id, kwargs, None)`` when the lock is now held under ``task_id``,
            or ``(task_id, kwargs, rejected)`` with an ``EagerResult`` in state
            REJECTED (its ``info`` the :class:`LockHeld`, or None for a duplicate).
        """
        kwargs = dict(kwargs or {})
        headers = headers or {}
        # Only JobScheduler stamps ``scheduled_for``; a message with just
        # ``periodic_task_name`` is the admin's "Run selected tasks": manual.
        from_beat = bool(headers.get("scheduled_for"))
        trigger = kwargs.setdefault("trigger", "beat" if from_beat else "manual")
        if trigger not in ("beat", "manual"):
            raise ValueError(f"trigger={trigger!r} is invalid: 'beat' or 'manual'")
        scheduled_for = parse_iso(kwargs.get("scheduled_for") or headers.get("scheduled_for"))
        if trigger == "beat" and scheduled_for is None:
            raise ValueError(f"a beat trigger of {self.spec.name} needs its scheduled time (kwarg or header scheduled_for)")
        if trigger == "manual":
            scheduled_for = None
            kwargs.pop("scheduled_for", None)
        if scheduled_for is not None:
            kwargs["scheduled_for"] = iso(scheduled_for)
        task_id = task_id or make_task_id(self.spec.name, scheduled_for)

        if scheduled_for is not None and _working_run_exists(self.spec.name, scheduled_for):
            logger.info("Job %s skipped: scheduled time %s already has a run (duplicate trigger)", self.spec.name, iso(scheduled_for))
            return task_id, kwargs, EagerResult(task_id, None, states.REJECTED)
        own_slot = slot_of_task_id(task_id)
        try:
            # A beat trigger waits as celery-once's ``blocking`` /
            # ``blocking_timeout`` settings say (wait=None), so a run of another
            # scheduled time that is about to finish can release the lock and a
            # short overlap does not cost a scheduled time; a holder for the
            # same scheduled time means this trigger is a duplicate. A manual
            # trigger never waits.
            self.once_backend.raise_or_lock(
                self.spec.lock_key, timeout=self.spec.lock_ttl, token=task_id,
                wait=None if scheduled_for else 0.0,
                keep_waiting=lambda holder: slot_of_task_id(holder.token) != own_slot,
            )
        except LockHeld as held:
            self._record_refused_send(task_id, kwargs["trigger"], scheduled_for, held, dry_run=bool(kwargs.get("dry_run")))
            return task_id, kwargs, EagerResult(task_id, held, states.REJECTED)
        return task_id, kwargs, None

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        """Send one run of this job under its lock.

        Returns the AsyncResult, or an ``EagerResult`` in state REJECTED
        (celery-once's graceful mode) whose ``info`` is the :class:`LockHeld`
        exception when the lock is held, or None for a duplicate trigger.
        """
        if options.get("retries"):
            # A retry message of a run that already holds the lock.
            return Task.apply_async(self, args, kwargs, task_id=task_id, **options)
        task_id, kwargs, rejected = self.reserve(kwargs, options.get("headers"), task_id)
        if rejected is not None:
            return rejected
        try:
            return Task.apply_async(self, args, kwargs, task_id=task_id, **options)
        except Exception:
            self.once_backend.clear_lock(self.spec.lock_key, token=task_id)
            raise

    def run_locally(self, kwargs: dict | None = None):
        """Run in this process under the same lock, retries (with the same backoff) and history.

        Returns the ``EagerResult`` (REJECTED when the lock is held).
        """
        task_id, kwargs, rejected = self.reserve(kwargs)
        if rejected is not None:
            return rejected
        try:
            with _local_time_limits(self.spec):
                return self.apply(kwargs=kwargs, task_id=task_id)
        finally:
            self.once_backend.clear_lock(self.spec.lock_key, token=task_id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        """Release the lock after the last attempt, only if this run holds it (compare-and-delete)."""
        if getattr(self._context, "keep_lock", False):
            self._context.keep_lock = False
            return
        self.once_backend.clear_lock(self.spec.lock_key, token=task_id)

    # -- running -------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly:
            return self.run(*args, **kwargs)
        close_old_connections()
        try:
            return self._run_attempt(request, kwargs)
        finally:
            close_old_connections()

    #: The running attempt's :class:`JobContext` (set by ``__call__``, read by the task body).
    _context = threading.local()

    def _run_attempt(self, request, kwargs):
        from scheduler_app.models import JobRun

        spec = self.spec
        task_id = request.id
        attempt = request.retries + 1
        trigger = kwargs.get("trigger", "manual")
        scheduled_for = parse_iso(kwargs.get("scheduled_for"))
        dry_run = bool(kwargs.get("dry_run", False))
        backend = self.once_backend

        self._context.keep_lock = False
        existing = JobRun.objects.filter(task_id=task_id).only("status", "attempts").first()
        if _is_known_duplicate(spec, existing, scheduled_for, attempt):
            # Decided by the database before touching the lock: the original
            # run may hold it under this very task id.
            self._context.keep_lock = _runs_under(task_id)
            return self._skip_duplicate(task_id, trigger, scheduled_for, dry_run)
        claim = backend.claim(spec.lock_key, task_id, spec.lock_ttl)
        if claim == CLAIM_REFUSED:
            holder = backend.holder(spec.lock_key)
            if attempt > 1 and _fail_refused_retry(spec, task_id, attempt, holder):
                self._context.keep_lock = True
                return {"status": "FAILED", "skip_reason": "", "run_id": None}
            run = _record_skip(spec, task_id, trigger, scheduled_for, JobRun.SkipReason.LOCK_HELD, dry_run)
            _log_lock_skip(spec, holder)
            return {"status": "SKIPPED", "skip_reason": "lock_held", "run_id": run.pk if run else None}

        run = _begin_attempt(spec, existing, task_id, trigger, scheduled_for, attempt, dry_run)
        if run is None:
            # A second delivery of a message whose run still holds the lock
            # under the same task id must not release it in after_return.
            self._context.keep_lock = claim == CLAIM_HELD_ALREADY
            return self._skip_duplicate(task_id, trigger, scheduled_for, dry_run)
        _mark_lost_runs(spec, exclude_task_id=task_id)

        logger.info(
            "Starting job %s (trigger=%s, scheduled=%s, lock=acquired, ttl=%ss, attempt %d/%d%s)",
            spec.name, trigger, iso(scheduled_for), spec.lock_ttl, attempt, MAX_ATTEMPTS, ", dry run" if dry_run else "",
        )
        budget = max(spec.soft_time_limit - max(spec.soft_time_limit * 0.1, 5), 1)
        ctx = JobContext(spec=spec, run_id=run.pk, trigger=trigger, scheduled_for=scheduled_for,
                         attempt=attempt, dry_run=dry_run, deadline=time.monotonic() + budget)
        self._context.ctx = ctx

        def lost() -> None:
            logger.error("Job %s lost its lock while running (run %s); another run may start", spec.name, run.pk)

        try:
            with LockRenewer(backend, spec.lock_key, task_id, spec.lock_ttl, on_lost=lost):
                result = super().__call__(**kwargs)
        except Retry as retry:
            countdown = float(retry.when or 0) if not isinstance(retry.when, dt.datetime) else 0.0
            logger.warning(
                "Job %s attempt %d/%d failed: %s; retrying in %gs",
                spec.name, attempt, MAX_ATTEMPTS, _describe(retry.exc), countdown,
            )
            _record_retry(run, retry.exc)
            if request.is_eager and countdown:
                try:
                    time.sleep(countdown)  # local runs honour the same backoff as the worker
                except BaseException as interrupted:  # Ctrl-C while waiting: the run ends here
                    cause = "".join(traceback.format_exception(retry.exc)) if retry.exc else ""
                    _finish(run, JobRun.Status.FAILED,
                            error=f"Interrupted during the retry wait after attempt {attempt}: {cause}")
                    logger.error("Job %s interrupted during its retry wait after attempt %d/%d",
                                 spec.name, attempt, MAX_ATTEMPTS)
                    raise interrupted from None
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            # Ctrl-C or SIGTERM on a local run: an operator's decision, not a bug to trace.
            duration = _finish(run, JobRun.Status.FAILED, error=f"Interrupted during attempt {attempt}: {exc!r}")
            logger.error("Job %s interrupted during attempt %d/%d after %dms", spec.name, attempt, MAX_ATTEMPTS, duration)
            raise
        except BaseException as exc:
            duration = _finish(run, JobRun.Status.FAILED, error="".join(traceback.format_exception(exc)))
            logger.error(
                "Job %s failed after %d attempts in %dms: %s",
                spec.name, attempt, duration, _describe(exc), exc_info=exc,
            )
            raise
        items = int(result) if isinstance(result, (int, float)) else None
        duration = _finish(run, JobRun.Status.SUCCEEDED, items=items)
        logger.info(
            "Job %s succeeded in %dms: %s items (attempt %d/%d%s)",
            spec.name, duration, items if items is not None else 0, attempt, MAX_ATTEMPTS, ", dry run" if dry_run else "",
        )
        return {"status": "SUCCEEDED", "items_processed": items, "run_id": run.pk}

    # -- helpers -------------------------------------------------------------

    def _skip_duplicate(self, task_id, trigger, scheduled_for, dry_run) -> dict:
        from scheduler_app.models import JobRun

        logger.info("Job %s skipped: scheduled time %s already has a run (duplicate, task %s)",
                    self.spec.name, iso(scheduled_for), task_id)
        dup = _record_skip(self.spec, task_id, trigger, scheduled_for, JobRun.SkipReason.DUPLICATE, dry_run)
        return {"status": "SKIPPED", "skip_reason": "duplicate", "run_id": dup.pk if dup else None}

    def _record_refused_send(self, task_id, trigger, scheduled_for, held: LockHeld, *, dry_run: bool) -> None:
        from scheduler_app.models import JobRun

        holder = held.holder
        if scheduled_for is not None and holder is not None and slot_of_task_id(holder.token) == slot_of_task_id(task_id):
            logger.info(
                "Job %s skipped: scheduled time %s is already being run by task %s (duplicate trigger)",
                self.spec.name, iso(scheduled_for), holder.token,
            )
            return
        _record_skip(self.spec, task_id, trigger, scheduled_for, JobRun.SkipReason.LOCK_HELD, dry_run)
        _log_lock_skip(self.spec, holder)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}"


def _working_run_exists(job: str, scheduled_for: dt.datetime) -> bool:
    from scheduler_app.models import JobRun

    return JobRun.objects.filter(job=job, scheduled_for=scheduled_for).exclude(status=JobRun.Status.SKIPPED).exists()


def describe_holder(holder) -> str:
    """``run 41 until 2026-11-30T02:09:58Z`` for a lock holder (a task id), or ``nobody``."""
    from scheduler_app.models import JobRun

    if holder is None:
        return "nobody"
    until = iso(timezone.now() + dt.timedelta(milliseconds=holder.ttl_ms))
    run = JobRun.objects.filter(task_id=holder.token).only("pk").first()
    who = f"run {run.pk}" if run else f"task {holder.token} (queued)"
    return f"{who} until {until}"


def _log_lock_skip(spec: JobSpec, holder) -> None:
    logger.info("Job %s skipped: lock held by %s", spec.name, describe_holder(holder))


def _record_skip(spec, task_id, trigger, scheduled_for, reason, dry_run):
    from scheduler_app.models import JobRun

    now = timezone.now()
    try:
        with transaction.atomic():
            return JobRun.objects.create(
                job=spec.name, trigger=trigger, scheduled_for=scheduled_for, status=JobRun.Status.SKIPPED,
                skip_reason=reason, dry_run=dry_run, attempts=0, started_at=now, finished_at=now, duration_ms=0,
                worker=worker_name(), task_id=task_id,
            )
    except IntegrityError:
        return JobRun.objects.filter(task_id=task_id).first()


@contextlib.contextmanager
def _local_time_limits(spec: JobSpec):
    """Apply the job's soft and hard time limits (seconds) to a run in this process, as a worker would.

    SIGALRM raises ``SoftTimeLimitExceeded`` after ``soft_time_limit`` and
    ``TimeLimitExceeded`` ``time_limit - soft_time_limit`` later. Only in the
    main thread (signals); elsewhere the run has no limit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        if state["phase"] == "soft":
            state["phase"] = "hard"
            signal.setitimer(signal.ITIMER_REAL, spec.time_limit - spec.soft_time_limit)
            raise SoftTimeLimitExceeded(f"soft time limit ({spec.soft_time_limit}s) exceeded")
        raise TimeLimitExceeded(spec.time_limit)

    state = {"phase": "soft"}
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, spec.soft_time_limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _runs_under(task_id: str) -> bool:
    """True when a RUNNING run owns ``task_id`` (a redelivered copy must leave its lock alone)."""
    from scheduler_app.models import JobRun

    return JobRun.objects.filter(task_id=task_id, status=JobRun.Status.RUNNING).exists()


def _is_known_duplicate(spec: JobSpec, existing, scheduled_for: dt.datetime | None, attempt: int) -> bool:
    """True when the database already shows this message's work as done or under way elsewhere.

    ``existing`` is the ``JobRun`` under this message's task id, or None. A
    redelivered message of a finished run, or of an attempt already started,
    and any message for a scheduled time that has a working run under another
    task id. Races past this check are caught by :func:`_begin_attempt`.
    """
    from scheduler_app.models import JobRun

    if existing is not None:
        return existing.status != JobRun.Status.RUNNING or attempt <= existing.attempts
    return scheduled_for is not None and _working_run_exists(spec.name, scheduled_for)


def _begin_attempt(spec, existing, task_id, trigger, scheduled_for, attempt, dry_run):
    """Insert the run's row on the first attempt, or bump ``attempts`` on a retry of ``existing``.

    Returns None when another delivery got there first: the scheduled time's
    working run exists (unique constraint), or a second delivery of the same
    retry message already took this attempt (conditional UPDATE).
    """
    from scheduler_app.models import JobRun

    if existing is not None:
        claimed = JobRun.objects.filter(pk=existing.pk, status=JobRun.Status.RUNNING, attempts=existing.attempts).update(
            attempts=attempt, worker=worker_name(),
        )
        if not claimed:
            return None
        return JobRun.objects.get(pk=existing.pk)
    try:
        with transaction.atomic():
            run = JobRun.objects.create(
                job=spec.name, trigger=trigger, scheduled_for=scheduled_for, status=JobRun.Status.RUNNING,
                dry_run=dry_run, attempts=attempt, started_at=timezone.now(), worker=worker_name(), task_id=task_id,
            )
    except IntegrityError:
        return None
    if scheduled_for is not None:
        # A trigger for this time refused earlier (lock held) turned out to be
        # a duplicate of this run: say so, so the time shows one run and duplicates.
        JobRun.objects.filter(job=spec.name, scheduled_for=scheduled_for, status=JobRun.Status.SKIPPED,
                              skip_reason=JobRun.SkipReason.LOCK_HELD).update(skip_reason=JobRun.SkipReason.DUPLICATE)
    return run


def _fail_refused_retry(spec: JobSpec, task_id: str, attempt: int, holder) -> bool:
    """A retry that finds its lock taken (it waited longer than the TTL): end its run as FAILED, truthfully."""
    from scheduler_app.models import JobRun

    who = describe_holder(holder)
    updated = JobRun.objects.filter(task_id=task_id, status=JobRun.Status.RUNNING).update(
        status=JobRun.Status.FAILED, finished_at=timezone.now(),
        error=f"Attempt {attempt} could not start: while this run waited for its retry its lock expired and {who} holds it now.",
    )
    if updated:
        logger.error("Job %s: retry attempt %d/%d could not start: its lock was taken by %s",
                     spec.name, attempt, MAX_ATTEMPTS, who)
    return bool(updated)


def _mark_lost_runs(spec: JobSpec, *, exclude_task_id: str) -> int:
    """Mark RUNNING rows of this job as FAILED: we hold the job's lock, so their holder is gone."""
    from scheduler_app.models import JobRun

    count = JobRun.objects.filter(job=spec.name, status=JobRun.Status.RUNNING).exclude(task_id=exclude_task_id).update(
        status=JobRun.Status.FAILED, finished_at=timezone.now(),
        error=("Worker lost: the run's lock expired or was cleared before it finished (its worker died, "
               "or an operator cleared the lock); the work it did not do is left for the next run."),
    )
    if count:
        logger.warning("Job %s: marked %d run(s) as failed that lost their lock before finishing", spec.name, count)
    return count


def _record_retry(run, exc) -> None:
    from scheduler_app.models import JobRun

    JobRun.objects.filter(pk=run.pk).update(error="".join(traceback.format_exception(exc)) if exc else "")


def _finish(run, status: str, *, items: int | None = None, error: str = "") -> int:
    from scheduler_app.models import JobRun

    now = timezone.now()
    duration = max(int((now - run.started_at).total_seconds() * 1000), 0)
    JobRun.objects.filter(pk=run.pk).update(
        status=status, finished_at=now, duration_ms=duration, items_processed=items, error=error,
    )
    return duration


def job(name: str, *, crontab: str, lock_ttl: int, soft_time_limit: int | None = None,
        time_limit: int | None = None, description: str = "") -> Callable[[Callable[[JobContext], Any]], JobTask]:
    """Register a job function as a Celery task on :class:`JobTask`.

    Args:
        name: job name (SPEC §3), used for the lock, the ``PeriodicTask`` and ``run_job``.
        crontab: default five-field crontab in ``TIME_ZONE`` (``sync_schedules`` creates it).
        lock_ttl: lock TTL in seconds; renewed every TTL/3 while the job runs.
        soft_time_limit / time_limit: seconds; default 6x and 7x the TTL.
    Raises:
        ValueError: bad crontab, non-positive TTL, a time limit not above the
        soft limit, or a job name registered twice for another task.
    """
    parse_crontab(crontab)
    if lock_ttl <= 0:
        raise ValueError(f"lock_ttl={lock_ttl!r} is invalid: a positive number of seconds")
    soft = soft_time_limit or lock_ttl * 6
    hard = time_limit or lock_ttl * 7
    if hard <= soft:
        raise ValueError(f"time_limit={hard} must be above soft_time_limit={soft}")
    from django.conf import settings

    # A message stays unacknowledged while it waits for its retry countdown or
    # sits prefetched behind a running job; if that could outlast Redis's
    # visibility timeout, Redis would hand it to a second worker.
    longest = hard * MAX_ATTEMPTS + sum(RETRY_BACKOFF_SECONDS * 2 ** i for i in range(MAX_ATTEMPTS - 1))
    visibility = settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    if longest >= visibility:
        raise ValueError(
            f"job {name!r}: {MAX_ATTEMPTS} attempts of time_limit={hard}s plus backoff ({longest}s) "
            f"must stay below the broker visibility timeout ({visibility}s)"
        )

    def decorator(fn: Callable[[JobContext], Any]) -> JobTask:
        from config.celery import app

        task_name = f"{fn.__module__}.{fn.__name__}"
        spec = JobSpec(name=name, task_name=task_name, crontab=crontab, lock_ttl=lock_ttl,
                       soft_time_limit=soft, time_limit=hard, description=description or (fn.__doc__ or "").strip().split("\n")[0])
        previous = REGISTRY.get(name)
        if previous is not None and previous.task_name != task_name:
            raise ValueError(f"job {name!r} is already registered for {previous.task_name}")
        REGISTRY[name] = spec
        task = app.task(
            bind=False, base=JobTask, name=task_name, spec=spec, job_function=staticmethod(fn),
            once={"graceful": True, "keys": [], "timeout": lock_ttl},
            soft_time_limit=soft, time_limit=hard,
        )(_task_body(fn))
        return task

    return decorator


def _task_body(fn):
    def body(trigger: str = "manual", scheduled_for: str | None = None, dry_run: bool = False):
        return fn(JobTask._context.ctx)

    body.__name__ = fn.__name__
    body.__doc__ = fn.__doc__
    body.__module__ = fn.__module__
    return body


@signals.task_revoked.connect
def _on_revoked(sender=None, request=None, terminated=False, signum=None, expired=False, **kwargs) -> None:
    """A job message revoked, expired or terminated: release its lock and say so in the history.

    Without this, a message that never ran (``expires`` passed while it
    waited, ``celery purge``, ``revoke``) would keep the job's lock until its
    TTL and leave no trace. Runs in the worker's main process.
    """
    if not isinstance(sender, JobTask) or request is None:
        return
    from scheduler_app.models import JobRun

    task_id = request.id
    spec = sender.spec
    sender.once_backend.clear_lock(spec.lock_key, token=task_id)
    why = "expired before a worker started it" if expired else (
        f"terminated by signal {signum}" if terminated else "revoked before it ran")
    request_kwargs = request.kwargs or {}
    close_old_connections()
    now = timezone.now()
    updated = JobRun.objects.filter(task_id=task_id, status=JobRun.Status.RUNNING).update(
        status=JobRun.Status.FAILED, finished_at=now, error=f"Revoked: {why}.")
    if not updated and not JobRun.objects.filter(task_id=task_id).exists():
        try:
            with transaction.atomic():
                JobRun.objects.create(
                    job=spec.name, trigger=request_kwargs.get("trigger", "manual"),
                    scheduled_for=parse_iso(request_kwargs.get("scheduled_for")), status=JobRun.Status.FAILED,
                    dry_run=bool(request_kwargs.get("dry_run")), attempts=0, started_at=now, finished_at=now,
                    duration_ms=0, worker=worker_name(), task_id=task_id, error=f"Revoked: {why}.",
                )
        except IntegrityError:
            pass  # the scheduled time has a working run already
    logger.warning("Job %s: task %s %s; its lock was released", spec.name, task_id, why)
