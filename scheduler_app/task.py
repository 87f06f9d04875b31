"""The base task every job runs on: send, claim, run, retry, finish (SPEC §3, §6, §7).

:class:`JobTask` is a celery-once ``QueueOnce`` subclass. What every run of
every job does:

1. **Send** (``apply_async``, in beat or ``run_job``): the task id is made
   first (``<job>:<scheduled time or "manual">:<random>``) and the job's lock
   (one celery-once key per job) is taken with that id as its token. If the
   lock is held, nothing is queued: the skip is logged with the holder and the
   expiry, and recorded as a SKIPPED ``JobRun`` (``lock_held``) unless the
   holder is a run for the same scheduled time (then it is a duplicate send
   by a second beat and only logged).
2. **Claim** (worker, each attempt): the database is asked first whether this
   message's work is already done or under way (a duplicate is recorded as
   SKIPPED ``duplicate`` and does nothing); then the worker confirms it still
   holds the lock under its task id (or takes it if it expired while queued);
   the first attempt inserts the ``JobRun`` row, where the database's
   one-working-run-per-scheduled-time constraint has the last word.
3. **Run**: runs of the same job that lost their lock are marked failed
   (their worker died), then the job function runs with the lock renewed
   every TTL/3.
4. **Retry**: ``autoretry_for=(Exception,)``, ``max_retries=2``,
   ``retry_backoff=1``, ``retry_jitter=False``: 3 attempts, the 2nd 1 s after
   the first failure, the 3rd 2 s after the second. The lock stays held
   through the backoff (celery-once's ``after_return`` is not called for
   RETRY).
5. **Finish**: a job function that returns a :class:`~scheduler_app.context.Deferred`
   (``ctx.defer``: its work goes on in other tasks, e.g. a chord of batches)
   leaves the row RUNNING, logs ``dispatched N batches`` and releases the
   lock; one of those tasks ends the run (``JobRun.objects.complete``).
   Otherwise the row gets its outcome, the lock is released by
   compare-and-delete on the task id, a failed run is logged with its
   traceback and reaches Sentry once (the Celery integration reports only the
   final attempt's exception).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Task, states
from celery.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import EagerResult
from celery_once import QueueOnce
from django.db import DatabaseError, close_old_connections, connection

from scheduler_app.context import (
    MAX_ATTEMPTS,
    RETRY_BACKOFF_SECONDS,
    Deferred,
    JobContext,
    attempt_deadline,
    describe_error,
    iso,
    make_task_id,
    parse_iso,
    slot_of_task_id,
)
from scheduler_app.keeper import RunKeeper, until_database_answers
from scheduler_app.locks import CLAIM_HELD_ALREADY, CLAIM_REFUSED, LockHeld, OwnedRedisBackend
from scheduler_app.models import JobRun

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from scheduler_app.registry import JobSpec

logger = logging.getLogger("scheduler")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One delivery of a job message to a worker (or to a local run).

    Attributes:
        task_id: the Celery task id (also the lock token).
        number: 1-based attempt number.
        trigger: ``JobRun.Trigger`` value.
        scheduled_for: aware UTC scheduled time, or None for a manual run.
        dry_run: change nothing.
    """

    task_id: str
    number: int
    trigger: str
    scheduled_for: dt.datetime | None
    dry_run: bool

    @classmethod
    def of(cls, request: Any, kwargs: dict) -> Attempt:
        """Read the attempt from a Celery request and the task kwargs."""
        return cls(task_id=request.id, number=request.retries + 1,
                   trigger=kwargs.get("trigger", JobRun.Trigger.MANUAL),
                   scheduled_for=parse_iso(kwargs.get("scheduled_for")), dry_run=bool(kwargs.get("dry_run", False)))


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGTERM, SIGINT and SIGQUIT back until the block ends, then handle them as usual.

    For the block, each signal's Python handler is swapped for one that only
    notes it; afterwards the handlers are put back and each noted signal is
    raised again, so the process stops (or does whatever its handler does)
    right after the block. A signal mask would not do: it holds a signal back
    only from the calling thread, and a process with another thread (Sentry's
    transport, a connection's health check) would take it there. Only in the
    main thread (where Python runs signal handlers); elsewhere nothing
    changes. SIGKILL cannot be held: a sender killed that way between lock
    and message leaves the lock until its TTL.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous: dict[int, Any] = {}
    for held in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        if signal.getsignal(held) is None:
            continue  # installed outside Python: it could not be put back
        previous[held] = signal.signal(held, lambda received, frame: noted.append(received))
    try:
        yield
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        for received in dict.fromkeys(noted):
            signal.raise_signal(received)


def outcome(status: str, *, run: JobRun | None, skip_reason: str = "", items: int | None = None) -> dict:
    """The task's return value (the Celery result): ``{"status", "skip_reason", "items_processed", "run_id"}``."""
    return {"status": status, "skip_reason": skip_reason, "items_processed": items,
            "run_id": run.pk if run is not None else None}


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

    #: Per-thread state of the running attempt: ``ctx`` (its :class:`JobContext`) and ``keep_lock``.
    _context = threading.local()

    @classmethod
    def current_context(cls) -> JobContext:
        """The :class:`JobContext` of the attempt running in this thread (read by the task body)."""
        return cls._context.ctx

    # -- celery-once hooks ---------------------------------------------------

    @property
    def once_backend(self) -> OwnedRedisBackend:
        """The owned lock backend (one per task class, built from ``CELERY_ONCE["settings"]``)."""
        backend = getattr(type(self), "_backend_instance", None)
        if backend is None:
            backend = OwnedRedisBackend(self.once_config["settings"])
            type(self)._backend_instance = backend
        return backend

    def get_key(self, args=None, kwargs=None) -> str:
        """One lock per job, whatever the kwargs (SPEC §6)."""
        return self.spec.lock_key

    # -- 1. send ---------------------------------------------------------------

    def reserve(self, kwargs: dict | None = None, headers: dict | None = None, task_id: str | None = None):
        """Prepare one run and take the job's lock for it (module docstring, step 1).

        Args:
            kwargs: task kwargs (``trigger``, ``scheduled_for``, ``dry_run``). A manual
                trigger with ``scheduled_for`` runs that scheduled time by hand
                (``run_job --scheduled-for``), under the same once-per-time guarantee.
            headers: message headers; ``scheduled_for`` (set by the beat scheduler) marks a beat trigger.
            task_id: use this id instead of making one.
        Returns:
            ``(task_id, kwargs, None)`` when the lock is now held under ``task_id``,
            or ``(task_id, kwargs, rejected)`` with an ``EagerResult`` in state
            REJECTED (its ``info`` the :class:`LockHeld`, or None for a duplicate).
        Raises:
            ValueError: an unknown trigger, or a beat trigger without its scheduled time.
        """
        kwargs = dict(kwargs or {})
        headers = headers or {}
        # Only JobScheduler stamps ``scheduled_for``; a message with just
        # ``periodic_task_name`` is the admin's "Run selected tasks": manual.
        from_beat = bool(headers.get("scheduled_for"))
        trigger = kwargs.setdefault("trigger", JobRun.Trigger.BEAT if from_beat else JobRun.Trigger.MANUAL)
        if trigger not in JobRun.Trigger.values:
            raise ValueError(f"trigger={trigger!r} is invalid: one of {', '.join(map(repr, JobRun.Trigger.values))}")
        if trigger == JobRun.Trigger.BEAT:
            scheduled_for = parse_iso(kwargs.get("scheduled_for") or headers.get("scheduled_for"))
            if scheduled_for is None:
                raise ValueError(f"a beat trigger of {self.spec.name} needs its scheduled time "
                                 "(kwarg or header scheduled_for)")
        else:  # a header alone (the admin's "Run selected tasks") never makes a manual run a scheduled one
            scheduled_for = parse_iso(kwargs.get("scheduled_for"))
            if scheduled_for is None:
                kwargs.pop("scheduled_for", None)
        if scheduled_for is not None:
            kwargs["scheduled_for"] = iso(scheduled_for)
        task_id = task_id or make_task_id(self.spec.name, scheduled_for)

        if scheduled_for is not None and JobRun.objects.working_run_exists(self.spec.name, scheduled_for):
            logger.info("Job %s skipped: scheduled time %s already has a run (duplicate trigger)",
                        self.spec.name, iso(scheduled_for))
            return task_id, kwargs, EagerResult(task_id, None, states.REJECTED)
        try:
            self._take_lock(task_id, scheduled_for)
        except LockHeld as held:
            self._record_refused_send(task_id, trigger, scheduled_for, held, dry_run=bool(kwargs.get("dry_run")))
            return task_id, kwargs, EagerResult(task_id, held, states.REJECTED)
        return task_id, kwargs, None

    def _take_lock(self, task_id: str, scheduled_for: dt.datetime | None) -> None:
        """Take the job's lock under ``task_id``; raise :class:`LockHeld` when another run holds it.

        A beat trigger waits while the holder is a run of another scheduled
        time, as celery-once's ``blocking`` / ``blocking_timeout`` settings
        say, so a short overlap does not cost a scheduled time; a holder for
        the same scheduled time means this trigger is a duplicate and ends the
        wait at once. Manual triggers never wait.
        """
        own_slot = slot_of_task_id(task_id)
        try:
            self.once_backend.raise_or_lock(
                self.spec.lock_key, timeout=self.spec.lock_ttl, token=task_id,
                wait=None if scheduled_for is not None else 0.0,  # None: the backend's blocking settings decide
                keep_waiting=lambda holder: slot_of_task_id(holder.token) != own_slot,
            )
        except LockHeld as held:
            # A holder that died (no heartbeat for 3 periods) is taken over now, not after its whole TTL.
            same_time = scheduled_for is not None and held.holder is not None \
                and slot_of_task_id(held.holder.token) == own_slot  # a duplicate trigger: never a takeover
            if held.holder is None or same_time or not self._take_over_from_dead_holder(task_id, patient=False):
                raise
            self.once_backend.raise_or_lock(self.spec.lock_key, timeout=self.spec.lock_ttl, token=task_id, wait=0.0)

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):
        """Send one run of this job under its lock.

        Returns the AsyncResult, or an ``EagerResult`` in state REJECTED
        (celery-once's graceful mode) whose ``info`` is the :class:`LockHeld`
        exception when the lock is held, or None for a duplicate trigger.
        """
        if options.get("retries"):
            # A retry message of a run that already holds the lock.
            return Task.apply_async(self, args, kwargs, task_id=task_id, **options)
        # Taking the lock and queueing the message happen together: a beat or run_job
        # told to stop (SIGTERM, Ctrl-C) in between would leave a lock without a
        # message, and the job's triggers skipped until its TTL ends.
        with stop_signals_deferred():
            task_id, kwargs, rejected = self.reserve(kwargs, options.get("headers"), task_id)
            if rejected is not None:
                return rejected
            try:
                return Task.apply_async(self, args, kwargs, task_id=task_id, **options)
            except Exception:
                self.once_backend.clear_lock(self.spec.lock_key, token=task_id)
                raise

    def run_locally(self, kwargs: dict | None = None):
        """Run in this process under the same lock, retries, time limits and history (``run_job --local``).

        Returns the ``EagerResult`` (REJECTED when the lock is held).
        """
        from scheduler_app.local import run_locally

        return run_locally(self, kwargs)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        """Release the lock after the last attempt, only if this run holds it (compare-and-delete)."""
        if getattr(self._context, "keep_lock", False):
            self._context.keep_lock = False
            return
        self.once_backend.clear_lock(self.spec.lock_key, token=task_id)

    # -- 2.-5. one attempt on a worker ----------------------------------------

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly:
            return self.run(*args, **kwargs)
        close_old_connections()
        try:
            return self._run_attempt(Attempt.of(request, kwargs), kwargs)
        finally:
            close_old_connections()

    def _run_attempt(self, attempt: Attempt, kwargs: dict) -> dict:
        """Claim the run for ``attempt`` and run it, or record why not (module docstring, steps 2-5).

        Every database step waits through an outage (:func:`until_database_answers`):
        bookkeeping never costs an attempt.
        """
        self._context.keep_lock = False
        job = self.spec.name

        def look_up() -> tuple[JobRun | None, bool]:
            existing = JobRun.objects.filter(task_id=attempt.task_id).only("status", "attempts").first()
            return existing, JobRun.objects.is_known_duplicate(existing, job=job, scheduled_for=attempt.scheduled_for,
                                                               attempt=attempt.number)

        existing, duplicate = self._bookkeeping(look_up, f"starting attempt {attempt.number}")
        if duplicate:
            # Decided by the database before touching the lock: the original
            # run may hold it under this very task id.
            return self._skip_duplicate(attempt, keep_lock=self._bookkeeping(
                lambda: JobRun.objects.running_under(attempt.task_id), "checking a duplicate"))
        claim = self.once_backend.claim(self.spec.lock_key, attempt.task_id, self.spec.lock_ttl)
        if claim == CLAIM_REFUSED and self._take_over_from_dead_holder(attempt.task_id):
            claim = self.once_backend.claim(self.spec.lock_key, attempt.task_id, self.spec.lock_ttl)
        if claim == CLAIM_REFUSED:
            return self._refuse(attempt)
        if existing is None:
            self._mark_lost_runs(attempt)
        run = self._bookkeeping(lambda: JobRun.objects.begin(
            job=job, existing=existing, task_id=attempt.task_id, trigger=attempt.trigger,
            scheduled_for=attempt.scheduled_for, attempt=attempt.number, dry_run=attempt.dry_run,
        ), f"starting attempt {attempt.number}")
        if run is None:
            live = None if existing is not None or attempt.dry_run else self._bookkeeping(
                lambda: self._working_run_blocking(attempt), "checking who works")
            if live is not None:
                return self._refuse_by_database(attempt, live)
            # A second delivery of a message whose run still holds the lock
            # under the same task id must not release it in after_return.
            return self._skip_duplicate(attempt, keep_lock=claim == CLAIM_HELD_ALREADY)
        return self._execute(run, attempt, kwargs)

    def _bookkeeping(self, fn: Callable[[], T], what: str) -> T:
        """Run one database step of the engine, waiting through an outage (see :func:`until_database_answers`)."""
        return until_database_answers(fn, what=what, job=self.spec.name)

    def _working_run_blocking(self, attempt: Attempt) -> JobRun | None:
        """The other run that made :meth:`JobRunQuerySet.begin` refuse ``attempt``, when it is not a duplicate."""
        if attempt.scheduled_for is not None and JobRun.objects.working_run_exists(self.spec.name,
                                                                                   attempt.scheduled_for):
            return None
        return JobRun.objects.live_run(self.spec.name, exclude_task_id=attempt.task_id)

    def _refuse_by_database(self, attempt: Attempt, live: JobRun) -> dict:
        """Another run works though the Redis lock was ours (it expired, or Redis lost it): SKIPPED ``lock_held``.

        The database decides (``jobrun_one_working_run_per_job``). Our lock is
        released in ``after_return``, and the working run takes it back on its next heartbeat.
        """
        holder_text = f"run {live.pk} on {live.worker or 'an unknown worker'}, working (its heartbeat is fresh)"
        run = self._bookkeeping(lambda: JobRun.objects.record_skip(
            job=self.spec.name, task_id=attempt.task_id, trigger=attempt.trigger, scheduled_for=attempt.scheduled_for,
            reason=JobRun.SkipReason.LOCK_HELD, dry_run=attempt.dry_run, detail=f"Held by {holder_text}.",
        ), "recording a skip")
        logger.info("Job %s skipped: lock held by %s (the Redis lock was free, expired or lost; the database "
                    "refused a second run)", self.spec.name, holder_text)
        return outcome(JobRun.Status.SKIPPED, run=run, skip_reason=JobRun.SkipReason.LOCK_HELD)

    def _take_over_from_dead_holder(self, own_token: str, *, patient: bool = True) -> bool:
        """Free the job's lock when its holder is dead by the database's judgement; True when it is free now.

        Dead: the holder's run ended, or has had no heartbeat for 3 periods
        (:meth:`JobRunQuerySet.holder_is_dead`); such a run is marked lost and
        its lock deleted by compare-and-delete on its token, so a holder that
        changed meanwhile keeps its lock. A holder without a run (a message
        still queued) is never taken over. ``patient``: wait through a
        database outage (a worker); a sender (beat, ``run_job``) does not.
        """
        def step(fn: Callable[[], T], what: str) -> T:
            return self._bookkeeping(fn, what) if patient else fn()

        holder = self.once_backend.holder(self.spec.lock_key)
        if holder is None:
            return True
        dead = step(lambda: JobRun.objects.holder_is_dead(holder.token), "checking the lock's holder")
        if dead is None:
            return False
        if dead.status == JobRun.Status.RUNNING:
            step(lambda: JobRun.objects.mark_lost(self.spec.name, exclude_task_id=own_token), "marking lost runs")
        if self.once_backend.clear_lock(self.spec.lock_key, token=holder.token):
            last = dead.heartbeat_at or dead.started_at
            logger.warning("Job %s: the lock of run %s (%s, last heartbeat %s) was left by a process that is gone; "
                           "taken over", self.spec.name, dead.pk, dead.worker or "unknown worker", iso(last))
        return True

    def _refuse(self, attempt: Attempt) -> dict:
        """Another run holds the lock: a retry's run ends FAILED, a first attempt is a SKIPPED ``lock_held``."""
        holder = self.once_backend.holder(self.spec.lock_key)
        holder_text = self._bookkeeping(lambda: JobRun.objects.describe_holder(holder), "describing the holder")
        if attempt.number > 1 and self._bookkeeping(
                lambda: JobRun.objects.fail_refused_retry(attempt.task_id, attempt.number, holder_text),
                "recording a refused retry"):
            logger.error("Job %s: retry attempt %d/%d could not start: its lock was taken by %s",
                         self.spec.name, attempt.number, MAX_ATTEMPTS, holder_text)
            self._context.keep_lock = True
            return outcome(JobRun.Status.FAILED, run=None)
        run = self._bookkeeping(lambda: JobRun.objects.record_skip(
            job=self.spec.name, task_id=attempt.task_id, trigger=attempt.trigger, scheduled_for=attempt.scheduled_for,
            reason=JobRun.SkipReason.LOCK_HELD, dry_run=attempt.dry_run, detail=f"Held by {holder_text}.",
        ), "recording a skip")
        logger.info("Job %s skipped: lock held by %s", self.spec.name, holder_text)
        return outcome(JobRun.Status.SKIPPED, run=run, skip_reason=JobRun.SkipReason.LOCK_HELD)

    def _skip_duplicate(self, attempt: Attempt, *, keep_lock: bool) -> dict:
        """Record this message as a SKIPPED ``duplicate``; ``keep_lock``: the lock belongs to the original run."""
        self._context.keep_lock = keep_lock
        logger.info("Job %s skipped: scheduled time %s already has a run (duplicate, task %s)",
                    self.spec.name, iso(attempt.scheduled_for), attempt.task_id)
        run = self._bookkeeping(lambda: JobRun.objects.record_skip(
            job=self.spec.name, task_id=attempt.task_id, trigger=attempt.trigger, scheduled_for=attempt.scheduled_for,
            reason=JobRun.SkipReason.DUPLICATE, dry_run=attempt.dry_run,
        ), "recording a skip")
        return outcome(JobRun.Status.SKIPPED, run=run, skip_reason=JobRun.SkipReason.DUPLICATE)

    def _mark_lost_runs(self, attempt: Attempt) -> None:
        """Runs of this job still RUNNING whose heartbeat stopped 3 periods ago are gone: mark them FAILED."""
        count = self._bookkeeping(lambda: JobRun.objects.mark_lost(self.spec.name, exclude_task_id=attempt.task_id),
                                  "marking lost runs")
        if count:
            logger.warning("Job %s: marked %d run(s) as failed whose heartbeat had stopped (their worker died)",
                           self.spec.name, count)

    def _execute(self, run: JobRun, attempt: Attempt, kwargs: dict) -> dict:
        """Run the job function with the lock renewed; record and log the outcome, or the retry."""
        spec = self.spec
        dry = ", dry run" if attempt.dry_run else ""
        logger.info("Starting job %s (trigger=%s, scheduled=%s, lock=acquired, ttl=%ss, attempt %d/%d%s)",
                    spec.name, attempt.trigger, iso(attempt.scheduled_for), spec.lock_ttl, attempt.number,
                    MAX_ATTEMPTS, dry)
        keeper = RunKeeper(self.once_backend, spec.lock_key, attempt.task_id, spec.lock_ttl, run_id=run.pk,
                           job=spec.name)
        # A retry goes on from the items its failed attempts had reported (their work committed).
        items_before = (run.items_processed or 0) if attempt.number > 1 else 0
        self._context.ctx = JobContext(spec=spec, run_id=run.pk, trigger=attempt.trigger,
                                       scheduled_for=attempt.scheduled_for, attempt=attempt.number,
                                       dry_run=attempt.dry_run, deadline=attempt_deadline(spec),
                                       local=bool(self.request.is_eager), stop_reason=keeper.stop_reason,
                                       items_before=items_before)
        try:
            with keeper:
                result = super().__call__(**kwargs)
        except Retry as retry:
            self._record_retry(run, attempt, retry)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            # Ctrl-C or SIGTERM on a local run: an operator's decision, not a bug to trace.
            interrupted = f"Interrupted during attempt {attempt.number}: {exc!r}"
            duration = self._bookkeeping(lambda: JobRun.objects.finish(run, JobRun.Status.FAILED, error=interrupted),
                                         "recording the outcome")
            logger.error("Job %s interrupted during attempt %d/%d after %dms", spec.name, attempt.number,
                         MAX_ATTEMPTS, duration)
            raise
        except BaseException as exc:
            error = "".join(traceback.format_exception(exc))
            duration = self._bookkeeping(lambda: JobRun.objects.finish(run, JobRun.Status.FAILED, error=error),
                                         "recording the outcome")
            logger.error("Job %s failed after %d attempts in %dms: %s", spec.name, attempt.number, duration,
                         describe_error(exc), exc_info=exc)
            raise
        if isinstance(result, Deferred):
            # The run goes on in other tasks (JobContext.defer): it stays RUNNING and one of
            # them ends it (JobRun.objects.complete). The lock is released as for any run
            # (after_return): the deferred tasks must not rely on it.
            logger.info("Job %s dispatched %d %s in %dms; run %s stays RUNNING until they finish (attempt %d/%d%s)",
                        spec.name, result.total, result.what, JobRun.objects.elapsed_ms(run), run.pk,
                        attempt.number, MAX_ATTEMPTS, dry)
            return outcome(JobRun.Status.RUNNING, run=run)
        items = int(result) + items_before if isinstance(result, (int, float)) else None
        stopped = keeper.stop_reason()
        if stopped is not None:
            # Stopped by the fence, not by a bug: no retry (a newer run owns the job now).
            duration = self._bookkeeping(lambda: JobRun.objects.finish(
                run, JobRun.Status.FAILED, items=items, error=f"Stopped: {stopped}."), "recording the outcome")
            logger.error("Job %s failed after %d attempts in %dms: stopped: %s", spec.name, attempt.number,
                         duration, stopped)
            return outcome(JobRun.Status.FAILED, run=run, items=items)
        duration = self._bookkeeping(lambda: JobRun.objects.finish(run, JobRun.Status.SUCCEEDED, items=items),
                                     "recording the outcome")
        logger.info("Job %s succeeded in %dms: %s items (attempt %d/%d%s)",
                    spec.name, duration, items if items is not None else 0, attempt.number, MAX_ATTEMPTS, dry)
        return outcome(JobRun.Status.SUCCEEDED, run=run, items=items)

    def _record_retry(self, run: JobRun, attempt: Attempt, retry: Retry) -> None:
        """Log and keep a failed attempt that will retry; a local run waits out the countdown here."""
        countdown = float(retry.when or 0) if not isinstance(retry.when, dt.datetime) else 0.0
        logger.warning("Job %s attempt %d/%d failed: %s; retrying in %gs",
                       self.spec.name, attempt.number, MAX_ATTEMPTS, describe_error(retry.exc), countdown)
        try:  # best effort: the final outcome keeps the last error anyway, and an outage must not cost the retry
            JobRun.objects.record_attempt_error(
                run, "".join(traceback.format_exception(retry.exc)) if retry.exc else "", quiet_for_s=countdown)
        except DatabaseError as exc:
            logger.warning("Job %s: could not record attempt %d's error (%s); the retry goes ahead",
                           self.spec.name, attempt.number, describe_error(exc))
            connection.close()
        if not (self.request.is_eager and countdown):
            return
        try:
            time.sleep(countdown)  # local runs honour the same backoff as the worker
        except BaseException as interrupted:  # Ctrl-C while waiting: the run ends here
            cause = "".join(traceback.format_exception(retry.exc)) if retry.exc else ""
            self._bookkeeping(lambda: JobRun.objects.finish(
                run, JobRun.Status.FAILED,
                error=f"Interrupted during the retry wait after attempt {attempt.number}: {cause}"),
                "recording the outcome")
            logger.error("Job %s interrupted during its retry wait after attempt %d/%d",
                         self.spec.name, attempt.number, MAX_ATTEMPTS)
            raise interrupted from None

    def _record_refused_send(self, task_id: str, trigger: str, scheduled_for: dt.datetime | None, held: LockHeld, *,
                             dry_run: bool) -> None:
        """A send refused by the lock: a duplicate of the holder's time is only logged, else a SKIPPED ``lock_held``."""
        holder = held.holder
        if scheduled_for is not None and holder is not None \
                and slot_of_task_id(holder.token) == slot_of_task_id(task_id):
            logger.info("Job %s skipped: scheduled time %s is already being run by task %s (duplicate trigger)",
                        self.spec.name, iso(scheduled_for), holder.token)
            return
        from scheduler_app.senders import sender_description

        JobRun.objects.record_skip(job=self.spec.name, task_id=task_id, trigger=trigger, scheduled_for=scheduled_for,
                                   reason=JobRun.SkipReason.LOCK_HELD, dry_run=dry_run,
                                   worker=sender_description(trigger))
        logger.info("Job %s skipped: lock held by %s", self.spec.name, JobRun.objects.describe_holder(holder))
