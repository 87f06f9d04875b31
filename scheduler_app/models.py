"""Run history: one :class:`JobRun` row per job run (SPEC §3).

Every change of a run's state is a method of :class:`JobRunQuerySet`
(``JobRun.objects``): begin, retry, finish, skip, refuse, revoke and mark
lost. They are the only code that writes ``JobRun``; each is one INSERT or
one conditional UPDATE, so two processes racing for the same run cannot
both win (the database is the fence, the lock in Redis the fast path).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.db.models.functions import Cast, Coalesce, Concat, Now
from django.utils import timezone

from scheduler_app.context import MAX_ATTEMPTS, iso, lost_after_seconds, worker_name

if TYPE_CHECKING:
    from scheduler_app.locks import LockHolder

logger = logging.getLogger("scheduler")

LOST_RUN_ERROR = (
    "Worker lost: the run stopped sending heartbeats (its worker or `run_job --local` process died, or could not "
    "reach the database for 3 heartbeat periods), or its deferred tasks did not finish in time; the work it did "
    "not do is left for the next run."
)


def job_lock_ttl(job: str) -> float | None:
    """The lock TTL in seconds of the registered job named ``job``, or None for a name not registered."""
    from scheduler_app.registry import REGISTRY, load_registry

    spec = REGISTRY.get(job) or load_registry().get(job)
    return float(spec.lock_ttl) if spec is not None else None


def _lost_q(now: dt.datetime | None = None, *, lock_ttl: float | None = None) -> Q:
    """RUNNING rows whose holder is gone: no heartbeat for 3 periods, or a deferred run past its ``deferred_until``.

    ``now`` None means the database's clock (``NOW()``), as the heartbeats
    themselves are written with it: hosts whose clocks disagree still agree on
    who is alive. ``lock_ttl``: the job's, which shortens its period
    (:func:`~scheduler_app.context.heartbeat_seconds`). A row without any
    heartbeat (written before heartbeats existed) counts from its ``started_at``.
    """
    current: Any = now if now is not None else Now()
    stale = current - dt.timedelta(seconds=lost_after_seconds(lock_ttl))
    heartbeat_stale = Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    return Q(deferred_until__isnull=True) & heartbeat_stale | Q(deferred_until__lte=current)


class JobRunQuerySet(models.QuerySet["JobRun"]):
    """The run history's state changes (module docstring)."""

    def working_run_exists(self, job: str, scheduled_for: dt.datetime) -> bool:
        """True when ``scheduled_for`` of ``job`` already has a run that is not SKIPPED nor a dry run (SPEC §3)."""
        return self.filter(job=job, scheduled_for=scheduled_for, dry_run=False).exclude(
            status=JobRun.Status.SKIPPED).exists()

    def running_under(self, task_id: str) -> bool:
        """True when a RUNNING run owns ``task_id`` (a redelivered copy must leave its lock alone)."""
        return self.filter(task_id=task_id, status=JobRun.Status.RUNNING).exists()

    def record_skip(self, *, job: str, task_id: str, trigger: str, scheduled_for: dt.datetime | None,
                    reason: str, dry_run: bool, worker: str | None = None, detail: str = "") -> JobRun | None:
        """Insert a SKIPPED run (``reason``: a :class:`JobRun.SkipReason`); return it, or the row under ``task_id``.

        ``worker``: who recorded it (default this process's ``hostname:pid``); a sender names itself.
        ``detail``: who held the lock, kept in ``error`` for ``run_job`` and the admin.
        """
        now = timezone.now()
        try:
            with transaction.atomic():
                return self.create(
                    job=job, trigger=trigger, scheduled_for=scheduled_for, status=JobRun.Status.SKIPPED,
                    skip_reason=reason, dry_run=dry_run, attempts=0, started_at=now, finished_at=now, duration_ms=0,
                    worker=worker or worker_name(), task_id=task_id, error=detail,
                )
        except IntegrityError:
            return self.filter(task_id=task_id).first()

    def begin(self, *, job: str, existing: JobRun | None, task_id: str, trigger: str,
              scheduled_for: dt.datetime | None, attempt: int, dry_run: bool) -> JobRun | None:
        """Start attempt ``attempt`` (1-based): insert the run on the first, bump ``existing.attempts`` on a retry.

        Returns None when the database refuses: the scheduled time's working
        run exists (``jobrun_one_working_run_per_slot``), another run of the
        job is working (``jobrun_one_working_run_per_job``: RUNNING, not
        deferred, not a dry run; see :meth:`live_run`), or a second delivery of
        the same retry message already took this attempt (conditional UPDATE).
        Call :meth:`mark_lost` first, so that runs whose holder is gone do not
        block the job.
        """
        if existing is not None:
            claimed = self.filter(pk=existing.pk, status=JobRun.Status.RUNNING, attempts=existing.attempts).update(
                attempts=attempt, worker=worker_name(), heartbeat_at=Now(),
            )
            return self.get(pk=existing.pk) if claimed else None
        try:
            with transaction.atomic():
                run = self.create(
                    job=job, trigger=trigger, scheduled_for=scheduled_for, status=JobRun.Status.RUNNING,
                    dry_run=dry_run, attempts=attempt, started_at=timezone.now(), heartbeat_at=Now(),
                    worker=worker_name(), task_id=task_id,
                )
        except IntegrityError:
            return None
        if scheduled_for is not None:
            # A trigger for this time refused earlier (lock held) turned out to be
            # a duplicate of this run: say so, so the time shows one run and duplicates.
            self.filter(job=job, scheduled_for=scheduled_for, status=JobRun.Status.SKIPPED,
                        skip_reason=JobRun.SkipReason.LOCK_HELD).update(skip_reason=JobRun.SkipReason.DUPLICATE)
        return run

    def is_known_duplicate(self, existing: JobRun | None, *, job: str, scheduled_for: dt.datetime | None,
                           attempt: int) -> bool:
        """True when the database already shows this message's work as done or under way elsewhere.

        ``existing`` is the run under this message's task id, or None. True
        for a redelivered message of a finished run or of an attempt already
        started, and for any message of a scheduled time that has a working
        run under another task id. Races past this check are caught by :meth:`begin`.
        """
        if existing is not None:
            return existing.status != JobRun.Status.RUNNING or attempt <= existing.attempts
        return scheduled_for is not None and self.working_run_exists(job, scheduled_for)

    def fail_refused_retry(self, task_id: str, attempt: int, holder_text: str) -> bool:
        """End a RUNNING run as FAILED because its retry found the lock taken; True if this call ended it."""
        return bool(self.filter(task_id=task_id, status=JobRun.Status.RUNNING).update(
            status=JobRun.Status.FAILED, finished_at=timezone.now(),
            error=(f"Attempt {attempt} could not start: while this run waited for its retry its lock expired "
                   f"and {holder_text} holds it now."),
        ))

    def mark_lost(self, job: str, *, exclude_task_id: str, now: dt.datetime | None = None) -> int:
        """Mark ``job``'s other RUNNING runs whose holder is gone FAILED; return how many.

        Judged from the database alone (issue 11), never from the Redis lock: a
        run is lost when its heartbeat (:meth:`heartbeat`) is older than 3
        periods (``lost_after_seconds``), or, for a deferred run
        (:meth:`defer_run`), which holds no lock and sends no heartbeat while
        its tasks run, once its ``deferred_until`` has passed. One conditional
        UPDATE, so a heartbeat written meanwhile keeps its run alive.
        """
        return self.filter(_lost_q(now, lock_ttl=job_lock_ttl(job)), job=job, status=JobRun.Status.RUNNING).exclude(
            task_id=exclude_task_id,
        ).update(status=JobRun.Status.FAILED, finished_at=now or timezone.now(), error=LOST_RUN_ERROR)

    def lost(self, now: dt.datetime | None = None, *, job: str) -> JobRunQuerySet:
        """RUNNING runs of ``job`` whose holder is gone (see :meth:`mark_lost`), not yet recorded as such.

        ``now`` None: the database's clock.
        """
        return self.filter(_lost_q(now, lock_ttl=job_lock_ttl(job)), job=job, status=JobRun.Status.RUNNING)

    def live_run(self, job: str, *, exclude_task_id: str = "") -> JobRun | None:
        """The run of ``job`` working now (RUNNING, not deferred, not a dry run) other than ``exclude_task_id``, if any.

        At most one exists (constraint ``jobrun_one_working_run_per_job``).
        """
        return self.filter(job=job, status=JobRun.Status.RUNNING, dry_run=False,
                           deferred_until__isnull=True).exclude(task_id=exclude_task_id).first()

    def heartbeat(self, run_id: int) -> bool:
        """Write a RUNNING run's heartbeat (the database's ``NOW()``); False when no longer RUNNING (judged lost)."""
        return bool(self.filter(pk=run_id, status=JobRun.Status.RUNNING).update(heartbeat_at=Now()))

    def holder_is_dead(self, token: str, *, now: dt.datetime | None = None) -> JobRun | None:
        """The run whose task id ``token`` holds a lock, when that run can no longer be holding it; else None.

        Dead means: the run has ended (its process died between writing the
        outcome and releasing the lock), or it is RUNNING with a heartbeat
        older than 3 periods. A token without a run (a message still queued)
        is never judged dead here: its lock expires with its TTL.
        """
        run = self.filter(task_id=token).first()
        if run is None or run.status == JobRun.Status.SKIPPED:
            return None
        if run.status != JobRun.Status.RUNNING:
            return run
        return run if self.filter(_lost_q(now, lock_ttl=job_lock_ttl(run.job)), pk=run.pk).exists() else None

    def silent_seconds(self, run_id: int) -> float | None:
        """Seconds since the run's last heartbeat (or start), by the database's clock; None if there is no such run."""
        row = self.filter(pk=run_id).annotate(db_now=Now()).values_list("db_now", "heartbeat_at", "started_at").first()
        if row is None:
            return None
        db_now, heartbeat, started = row
        return max((db_now - (heartbeat or started)).total_seconds(), 0.0)

    def record_attempt_error(self, run: JobRun, error: str, *, quiet_for_s: float = 0.0) -> None:
        """Keep the failed attempt's traceback on a run that will retry in ``quiet_for_s`` seconds.

        The heartbeat is set that far ahead: no heartbeat is written during
        the retry's countdown, and the run must not look dead meanwhile.
        """
        self.filter(pk=run.pk, status=JobRun.Status.RUNNING).update(
            error=error, heartbeat_at=Now() + dt.timedelta(seconds=quiet_for_s))

    def elapsed_ms(self, run: JobRun) -> int:
        """Milliseconds since the run started."""
        return max(int((timezone.now() - run.started_at).total_seconds() * 1000), 0)

    def finish(self, run: JobRun, status: str, *, items: int | None = None, error: str = "") -> int:
        """Write a run's outcome (``status``: SUCCEEDED or FAILED); return its duration since ``started_at`` in ms.

        ``items`` None keeps the count the run last reported (:meth:`record_progress`), so a failed
        run shows how far it got.

        Only a RUNNING run is changed: a run judged lost meanwhile (its
        heartbeat was stale, and another run may have taken over) keeps its
        FAILED record, and the outcome that came too late is logged instead.
        """
        now = timezone.now()
        duration = max(int((now - run.started_at).total_seconds() * 1000), 0)
        fields: dict = {"status": status, "finished_at": now, "duration_ms": duration, "error": error}
        if items is not None:
            fields["items_processed"] = items
        if not self.filter(pk=run.pk, status=JobRun.Status.RUNNING).update(**fields):
            logger.error("Job %s: run %s had already ended (judged lost from its heartbeat?); its late outcome "
                         "%s is not recorded", run.job, run.pk, status)
        return duration

    def record_progress(self, run_id: int, *, items: int, detail: str = "") -> bool:
        """Store a RUNNING run's items done so far and a short ``detail`` (``"3/10 batches"``); False if it ended."""
        return bool(self.filter(pk=run_id, status=JobRun.Status.RUNNING).update(
            items_processed=items, progress=detail[:255]))

    def defer_run(self, run_id: int, *, total: int, within_s: int, what: str = "batches") -> bool:
        """Mark a RUNNING run as deferred: its work goes on in ``total`` tasks, expected within ``within_s`` seconds.

        Resets the parts done (a retried dispatch starts over). False if the run is not RUNNING.
        """
        until = timezone.now() + dt.timedelta(seconds=within_s)
        return bool(self.filter(pk=run_id, status=JobRun.Status.RUNNING).update(
            deferred_until=until, parts_total=total, parts_done=0, items_processed=0,
            progress=f"0/{total} {what}"[:255]))

    def record_part_done(self, run_id: int, *, items: int, what: str = "batches") -> bool:
        """One task of a deferred run finished: add ``items`` to its count and 1 to its parts done (one UPDATE).

        ``progress`` becomes e.g. ``"3/10 batches"``. False if the run is not RUNNING (it ended meanwhile).
        """
        done = models.F("parts_done") + 1
        return bool(self.filter(pk=run_id, status=JobRun.Status.RUNNING).update(
            parts_done=done,
            items_processed=Coalesce(models.F("items_processed"), 0) + items,
            progress=Concat(Cast(done, models.CharField()), models.Value("/"),
                            Cast(models.F("parts_total"), models.CharField()), models.Value(f" {what}"),
                            output_field=models.CharField()),
        ))

    def complete(self, run_id: int, status: str, *, items: int | None = None, error: str = "") -> bool:
        """End a deferred run (``status``: SUCCEEDED or FAILED) and log its SPEC §7 line; False if it had ended already.

        Called by the task that sees the deferred work finished (a chord
        callback). ``items`` None keeps the count reached. One conditional
        UPDATE: of two callers only one ends the run and logs.
        """
        if status not in (JobRun.Status.SUCCEEDED, JobRun.Status.FAILED):
            raise ValueError(f"status={status!r} is invalid: SUCCEEDED or FAILED")
        run = self.filter(pk=run_id).only("job", "started_at", "attempts", "parts_total", "items_processed").first()
        if run is None:
            return False
        now = timezone.now()
        duration = max(int((now - run.started_at).total_seconds() * 1000), 0)
        fields: dict = {"status": status, "finished_at": now, "duration_ms": duration, "error": error}
        if items is not None:
            fields["items_processed"] = items
        if not self.filter(pk=run_id, status=JobRun.Status.RUNNING).update(**fields):
            return False
        parts = f", {run.parts_total} batches" if run.parts_total else ""
        if status == JobRun.Status.SUCCEEDED:
            logger.info("Job %s succeeded in %dms: %d items (attempt %d/%d%s)", run.job, duration,
                        items if items is not None else (run.items_processed or 0), run.attempts, MAX_ATTEMPTS, parts)
        else:
            logger.error("Job %s failed after %d attempts in %dms: %s", run.job, run.attempts, duration,
                         (error.strip().splitlines() or ["unknown error"])[-1])
        return True

    def record_revoked(self, *, job: str, task_id: str, trigger: str, scheduled_for: dt.datetime | None,
                       dry_run: bool, why: str) -> None:
        """A message revoked or expired before it ran: its RUNNING run (or a new row) is FAILED ``Revoked: why``."""
        now = timezone.now()
        error = f"Revoked: {why}."
        updated = self.filter(task_id=task_id, status=JobRun.Status.RUNNING).update(
            status=JobRun.Status.FAILED, finished_at=now, error=error)
        if updated or self.filter(task_id=task_id).exists():
            return
        try:
            with transaction.atomic():
                self.create(
                    job=job, trigger=trigger, scheduled_for=scheduled_for, status=JobRun.Status.FAILED,
                    dry_run=dry_run, attempts=0, started_at=now, finished_at=now, duration_ms=0,
                    worker=worker_name(), task_id=task_id, error=error,
                )
        except IntegrityError:
            pass  # the scheduled time has a working run already

    def describe_holder(self, holder: LockHolder | None) -> str:
        """``run 41 until 2026-11-30T02:09:58Z`` for a lock holder (its token is a task id), or ``nobody``."""
        if holder is None:
            return "nobody"
        until = iso(timezone.now() + dt.timedelta(milliseconds=holder.ttl_ms))
        run = self.filter(task_id=holder.token).only("pk").first()
        who = f"run {run.pk}" if run else f"task {holder.token} (queued)"
        return f"{who} until {until}"


class JobRun(models.Model):
    """One run of a job: every attempt of one trigger, its outcome and timings.

    A run is created by the worker when its first attempt starts (or by the
    sender when the trigger is refused because the lock is held) and updated
    as attempts fail, retry and finish. Retries of a run share its row and its
    Celery task id.

    The partial unique constraint ``jobrun_one_working_run_per_slot`` is the
    exactly-once guard of SPEC §3: for one (job, scheduled_for) at most one
    row that is not SKIPPED can exist, whichever beat or redelivery produced
    the message. Manual runs have ``scheduled_for`` NULL, which never
    conflicts.
    """

    class Trigger(models.TextChoices):
        BEAT = "beat", "beat"
        MANUAL = "manual", "manual"

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed"
        SKIPPED = "SKIPPED", "Skipped"

    class SkipReason(models.TextChoices):
        NONE = "", "-"
        LOCK_HELD = "lock_held", "lock held"
        DUPLICATE = "duplicate", "duplicate"

    job = models.CharField(max_length=100, db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The scheduled time this run belongs to (UTC); empty for manual runs.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, default="", blank=True)
    dry_run = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the first attempt's start to the end of the last, in milliseconds.")
    items_processed = models.PositiveIntegerField(null=True, blank=True, help_text="Items done; while RUNNING, so far.")
    progress = models.CharField(
        max_length=255, blank=True, help_text="What a running job last reported, e.g. '3/10 batches'.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Last sign of life of a RUNNING run, written every RUN_HEARTBEAT_SECONDS by the process running it.")
    deferred_until = models.DateTimeField(
        null=True, blank=True,
        help_text="A deferred run (its work handed to other tasks) is not marked lost before this time.")
    parts_total = models.PositiveIntegerField(default=0, help_text="A deferred run's tasks (e.g. batches).")
    parts_done = models.PositiveIntegerField(default=0, help_text="Of those, finished so far.")
    worker = models.CharField(
        max_length=255, blank=True, help_text="Celery worker hostname and pid, or the host of a --local run.")
    task_id = models.CharField(max_length=255, unique=True)
    error = models.TextField(blank=True)

    objects = JobRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_job_started")]
        # Run history itself is read-only for everyone (the admin grants no add, change or delete);
        # these guard what goes beyond reading it (scheduler_app.admin, scheduler_app.schedule_admin).
        permissions = [
            ("view_locks", "Can see job locks: their holders and task ids"),
            ("clear_lock", "Can clear a job lock"),
            ("run_job", "Can run a job by hand from the admin"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "scheduled_for"],
                # A dry run changes nothing, so it never takes a scheduled time from the real run.
                condition=~Q(status="SKIPPED") & Q(dry_run=False),
                name="jobrun_one_working_run_per_slot",
            ),
            # The database is the fence (issue 11): at most one run of a job works at a time, whatever
            # Redis forgot. A deferred run holds no lock (its tasks protect themselves), a dry run changes nothing.
            models.UniqueConstraint(
                fields=["job"],
                condition=Q(status="RUNNING") & Q(dry_run=False) & Q(deferred_until__isnull=True),
                name="jobrun_one_working_run_per_job",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} #{self.pk} {self.status}"


class SchedulePause(models.Model):
    """A paused schedule: the operator's decision to stop a ``PeriodicTask`` for a while (SPEC §10).

    While a pause exists its ``PeriodicTask`` is disabled; resuming (by hand,
    or when ``until`` passes) deletes the row and re-enables the task from
    that moment on, so no time that passed during the pause is run. Written
    only by :mod:`scheduler_app.schedule_services`.
    """

    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", on_delete=models.CASCADE,
                                         related_name="pause")
    reason = models.TextField()
    paused_by = models.CharField(max_length=255, help_text="Who paused it: an admin user, a command, …")
    paused_at = models.DateTimeField()
    until = models.DateTimeField(
        null=True, blank=True, help_text="Resumed automatically at this time (UTC); empty: until resumed.")

    class Meta:
        ordering = ["periodic_task__name"]

    def __str__(self) -> str:
        return f"{self.periodic_task.name} paused: {self.reason}"


from scheduler_app.ops_models import BeatHeartbeat, JobAlert, ScheduleBaseline  # noqa: E402,F401 - registered with the app
