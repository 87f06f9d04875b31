"""What one run is: its :class:`JobContext`, its task id and its scheduled time as text.

A run's Celery task id is ``<job>:<scheduled time or "manual">:<32 hex>``
(:func:`make_task_id`); it is also the value of the job's lock while the run
holds it, so anyone who reads the lock can tell which scheduled time its
holder belongs to (:func:`slot_of_task_id`). Times are written as
``2026-11-30T02:00:00Z`` (:func:`iso`), always UTC (SPEC §7).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from scheduler_app.registry import JobSpec

UTC = dt.UTC
logger = logging.getLogger("scheduler")

#: Attempts of one run in all (SPEC §3): the first and two retries.
MAX_ATTEMPTS = 3
#: Seconds between two progress writes of one run (:meth:`JobContext.report_progress`).
PROGRESS_INTERVAL_S = 2.0
#: Countdown before the first retry, in seconds; doubled for each next one (1 s, then 2 s; no jitter).
RETRY_BACKOFF_SECONDS = 1


def heartbeat_seconds(lock_ttl: float | None = None) -> float:
    """Seconds between two heartbeats of a running run: ``settings.RUN_HEARTBEAT_SECONDS`` (default 10).

    With ``lock_ttl`` (the job's lock TTL in seconds), at most a third of it:
    the lock is renewed in the same round, and a dead run must be judged
    lost by the time its lock expires (SPEC §6: the next trigger runs then).
    """
    from django.conf import settings

    period = float(getattr(settings, "RUN_HEARTBEAT_SECONDS", 10.0))
    return max(min(period, lock_ttl / 3.0), 0.05) if lock_ttl else period


def lost_after_seconds(lock_ttl: float | None = None) -> float:
    """Seconds without a heartbeat after which a RUNNING run is judged lost: 3 heartbeat periods (issue 11).

    Three periods, so that one slow or failed heartbeat write (a database
    hiccup) never makes a live run look dead; with ``lock_ttl``, at most the TTL.
    """
    return 3 * heartbeat_seconds(lock_ttl)


def presumed_dead_after_seconds(lock_ttl: float | None = None) -> float:
    """Seconds without a heartbeat after which ``run_job`` asks whether the worker died: 1.25 periods + 1 s."""
    return 1.25 * heartbeat_seconds(lock_ttl) + 1.0


def make_task_id(job_name: str, scheduled_for: dt.datetime | None) -> str:
    """Task id of one message: ``<job>:<YYYYmmddTHHMMSSZ|manual>:<32 hex>`` (also the lock token).

    Args:
        job_name: the job name (SPEC §3), e.g. ``"archive-audit-logs"``.
        scheduled_for: the aware scheduled time, or None for a manual run.
    """
    slot = scheduled_for.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if scheduled_for else "manual"
    return f"{job_name}:{slot}:{uuid.uuid4().hex}"


def slot_of_task_id(task_id: str) -> str | None:
    """The scheduled-time part of a task id made by :func:`make_task_id` (``"manual"``; None for other ids)."""
    parts = task_id.split(":")
    return parts[1] if len(parts) == 3 else None


def iso(moment: dt.datetime | None) -> str:
    """``2026-11-30T02:00:00Z`` for an aware datetime (converted to UTC); ``-`` for None."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | dt.datetime | None) -> dt.datetime | None:
    """An aware datetime from ISO 8601 text (``Z`` allowed; naive text is read as UTC); None stays None.

    Raises:
        ValueError: the text is not ISO 8601.
    """
    if value is None or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def worker_name() -> str:
    """``hostname:pid`` of this process (stored on each run as ``JobRun.worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def describe_error(exc: BaseException | None) -> str:
    """``TypeName: message`` of an exception for one log line; ``unknown error`` for None."""
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}"


@dataclasses.dataclass
class JobContext:
    """What a job function gets: the run it belongs to and how to behave.

    Attributes:
        spec: the job's :class:`~scheduler_app.registry.JobSpec`.
        run_id: primary key of the ``JobRun`` row.
        trigger: ``JobRun.Trigger.BEAT`` or ``JobRun.Trigger.MANUAL``.
        scheduled_for: the scheduled time (aware UTC) or None for manual runs.
        attempt: 1-based attempt number (1 to ``MAX_ATTEMPTS``).
        dry_run: report what would change and change nothing.
        deadline: ``time.monotonic()`` value after which :meth:`should_stop` is True, or None.
        logger: the engine's logger (``scheduler``).

    Methods: :meth:`should_stop` (between batches), :meth:`report_progress`
    (items done so far, stored on the run at most every ``PROGRESS_INTERVAL_S``)
    and :meth:`defer` (the run's work continues in other tasks).
    """

    spec: JobSpec
    run_id: int
    trigger: str
    scheduled_for: dt.datetime | None
    attempt: int
    dry_run: bool
    deadline: float | None = None
    #: True for a run in the calling process (``run_job --local``): no worker may be up, so a job
    #: that fans its work out to other tasks should do it in this process instead.
    local: bool = False
    logger: logging.Logger = logger
    #: Returns why the run must stop now (e.g. it was judged lost and another run took the job's lock), or
    #: None; set by the engine's :class:`~scheduler_app.keeper.RunKeeper`.
    stop_reason: Callable[[], str | None] | None = dataclasses.field(default=None, repr=False)
    #: Items that earlier attempts of this run reported before they failed; progress and the outcome add them.
    items_before: int = 0
    _progress_at: float = dataclasses.field(default=-math.inf, repr=False)

    def should_stop(self) -> bool:
        """True when the job should stop between batches.

        Either its soft time limit is near (the budget is ``soft_time_limit``
        minus 10%, at least 5 s, from the attempt's start; see
        :func:`attempt_deadline`), and the work left over is done by the next
        run; or the run may no longer work (:attr:`stop_reason`: it was judged
        lost, or another working run holds the job's lock), and the engine
        records it FAILED with that reason.
        """
        if self.stop_reason is not None and self.stop_reason() is not None:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def report_progress(self, items: int, detail: str = "", *, force: bool = False) -> bool:
        """Record ``items`` done so far by this attempt (and a short ``detail``) on the run, for the admin.

        Earlier failed attempts' items (:attr:`items_before`) are added, so a
        retry shows the run's total.

        Written at most once every ``PROGRESS_INTERVAL_S`` seconds (``force``
        writes now); a run that dies keeps the last count written. Nothing is
        written for a dry run, or for a context without a run (``run_id`` 0).
        Returns True when it was written.
        """
        now = time.monotonic()
        if self.dry_run or not self.run_id or (not force and now - self._progress_at < PROGRESS_INTERVAL_S):
            return False
        from scheduler_app.models import JobRun

        self._progress_at = now
        return JobRun.objects.record_progress(self.run_id, items=self.items_before + items, detail=detail)


    def defer(self, *, total: int, within_s: int, what: str = "batches") -> Deferred:
        """Say that this run's work goes on in ``total`` other tasks; return the :class:`Deferred` to return.

        Call it *before* sending those tasks (so that their progress and the
        completion find the run ready for them), then send them, then return
        its result from the job function. The engine then leaves the run
        RUNNING after the function returns; the last of those tasks (a chord
        callback) ends it with :meth:`JobRunQuerySet.complete
        <scheduler_app.models.JobRunQuerySet.complete>`, and each may count
        itself done with ``record_part_done``. Until ``within_s`` seconds from
        now the run is not marked lost by a later run that takes the job's
        lock; after that it is (its tasks are presumed dead).
        """
        if total < 1:
            raise ValueError(f"total={total!r} is invalid: at least 1 task (return a count when there is no work)")
        if self.run_id and not self.dry_run:
            from scheduler_app.models import JobRun

            JobRun.objects.defer_run(self.run_id, total=total, within_s=within_s, what=what)
        return Deferred(total=total, what=what)


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A job function's result meaning "dispatched ``total`` tasks; the run ends when they do".

    Made by :meth:`JobContext.defer`. The engine logs ``dispatched N
    batches``, releases the job's lock (the deferred work must protect itself,
    e.g. by claiming rows in the database) and leaves the ``JobRun`` RUNNING.
    """

    total: int
    what: str = "batches"


def attempt_deadline(spec: JobSpec) -> float:
    """The ``time.monotonic()`` value at which an attempt starting now should stop between batches.

    ``soft_time_limit`` seconds minus 10% of it (at least 5 s), at least 1 s from now.
    """
    budget = max(spec.soft_time_limit - max(spec.soft_time_limit * 0.1, 5), 1)
    return time.monotonic() + budget
