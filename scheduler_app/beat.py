"""The beat scheduler: django-celery-beat's ``DatabaseScheduler`` with scheduled times (SPEC §3, §10).

``celery -A config beat -S django`` runs :class:`JobScheduler` (named in
``CELERY_BEAT_SCHEDULER``). It reads and writes django-celery-beat's tables
like the stock scheduler, so the admin edits schedules as usual, and adds:

* every message carries the scheduled time it belongs to (header
  ``scheduled_for``), computed from the schedule, never from the moment beat
  woke up: any number of beats emit the same (job, scheduled time) pairs and
  the job engine runs each once;
* a crontab is due when its latest fire time (read in its time zone, by the
  DST rules of :mod:`scheduler_app.schedules`) is later than the last run:
  the second 01:00 of a fall-back night is an hour of its own for an hourly
  job;
* interval schedules fire on whole multiples of the interval since the Unix
  epoch, or since the task's ``start_time``;
* a task never runs for a scheduled time before its ``start_time``;
* a tick that comes late never skips a scheduled time younger than
  ``SCHEDULE_GRACE_SECONDS``: such times are sent oldest first, one a tick,
  unless another beat already ran them;
* after beat downtime (a due time older than ``SCHEDULE_GRACE_SECONDS``) the
  job's catch-up policy applies: ``skip``, ``latest`` (default) or ``all``;
  times that passed while a task was disabled or paused are never run, since
  re-enabling sets ``last_run_at`` to that moment
  (:mod:`scheduler_app.schedule_services`);
* a ``PeriodicTask`` whose schedule cannot be built is logged as an error
  once per change, instead of dropping out of the schedule silently;
* pauses whose ``until`` has passed are resumed;
* at start-up, missing schedules are created from the job registry
  (``sync_schedules``, never overwriting what an admin changed).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from celery import schedules
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from scheduler_app.context import iso
from scheduler_app.models import JobRun
from scheduler_app.registry import REGISTRY, JobSpec
from scheduler_app.schedules import AlignedSchedule, fire_times_between, next_fire_times, slot_for

logger = logging.getLogger("scheduler")

#: Seconds between checks for pauses whose ``until`` has passed.
PAUSE_CHECK_INTERVAL_S = 5.0


def _spec_for_task(task_name: str) -> JobSpec | None:
    return next((spec for spec in REGISTRY.values() if spec.task_name == task_name), None)


class JobEntry(ModelEntry):
    """A ``PeriodicTask`` row, due by its scheduled times (module docstring)."""

    def __init__(self, model, app=None):
        never_ran = model.last_run_at is None
        super().__init__(model, app=app)
        self.catch_up_slot: dt.datetime | None = None
        schedule = getattr(self, "schedule", None)
        if schedule is not None and type(schedule) is schedules.schedule:
            self.schedule = AlignedSchedule(schedule.run_every, nowfun=schedule.nowfun, app=self.app,
                                            anchor=model.start_time)
        # ModelEntry sets last_run_at in its untyped __init__.
        last_run_at: dt.datetime = self.last_run_at  # type: ignore[has-type]
        if model.start_time is not None and (never_ran or last_run_at < model.start_time):
            # django-celery-beat backdates last_run_at by 30 years so that the
            # task fires at start_time, which would run a scheduled time before
            # it; the first time to run is the first one at or after start_time.
            self.last_run_at = model.last_run_at = model.start_time - dt.timedelta(microseconds=1)

    def _has_fire_times(self) -> bool:
        return self.model.clocked_id is None and isinstance(self.schedule, (schedules.crontab, schedules.schedule))

    def is_due(self) -> schedules.schedstate:
        """``(due, seconds until the next check)`` by scheduled times (module docstring).

        Disabled, expired and finished one-off tasks, clocked and solar
        schedules and a ``start_time`` still ahead are django-celery-beat's.
        """
        model = self.model
        now = timezone.now()
        if (not model.enabled or not self._has_fire_times() or (model.expires is not None and now >= model.expires)
                or (model.one_off and model.total_run_count > 0)
                or (model.start_time is not None and now < model.start_time)):
            return super().is_due()
        self.catch_up_slot = None
        try:
            current: dt.datetime | None = slot_for(self.schedule, now)
        except ValueError:  # a crontab with no fire time in the last 5 years
            current = None
        upcoming = next_fire_times(self.schedule, now, 1)
        remaining = max((upcoming[0] - now).total_seconds(), 0.01) if upcoming else 300.0
        last = schedules.maybe_make_aware(self.last_run_at)
        if current is None or current <= last or (model.start_time is not None and current < model.start_time):
            return schedules.schedstate(False, remaining)
        if (now - current).total_seconds() > settings.SCHEDULE_GRACE_SECONDS:
            return self._catch_up(current, last, now, remaining)
        earlier = self._earlier_unrun_time(current, last, now)
        if earlier is not None:
            self.catch_up_slot = earlier
            return schedules.schedstate(True, 0.01)  # the next one, up to ``current``, at the next tick
        return schedules.schedstate(True, remaining)

    def _earlier_unrun_time(self, current: dt.datetime, last: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The earliest time before ``current``, after ``last`` and younger than the grace, that has no run at all.

        A tick that comes late (a beat slowed by a held lock, a schedule
        reload, a restart) must not skip a scheduled time that is still within
        ``SCHEDULE_GRACE_SECONDS``: another beat may have been down at that
        moment too. Such times are sent one per tick, oldest first; those
        another beat already sent (any ``JobRun`` row, SKIPPED included) are
        left out (one query). Beat downtime
        longer than the grace is the catch-up policy's (:meth:`_catch_up`).
        """
        try:
            previous = slot_for(self.schedule, current - dt.timedelta(microseconds=1))
        except (TypeError, ValueError):
            return None
        if previous is None or previous <= last:
            return None  # the common case: nothing between the last run and the current time
        grace_start = now - dt.timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS)
        if last < grace_start:
            return None  # beat downtime: the catch-up policy decides (SPEC §10), e.g. `latest` sends `current` only
        earlier = [t for t in fire_times_between(self.schedule, last, now, limit=1000) if t < current]
        if not earlier:
            return None
        spec = _spec_for_task(self.task)
        # Any row counts, a SKIPPED one too: that time's trigger came and the engine decided.
        done = set(JobRun.objects.filter(job=spec.name if spec else self.name, scheduled_for__in=earlier,
                                          dry_run=False).values_list("scheduled_for", flat=True))
        return next((t for t in earlier if t not in done), None)

    def _catch_up(self, current: dt.datetime, last: dt.datetime, now: dt.datetime,
                  remaining: float) -> schedules.schedstate:
        """Times missed while every beat was down: apply the job's catch-up policy (SPEC §10)."""
        spec = _spec_for_task(self.task)
        policy = spec.catch_up if spec else "latest"
        missed = fire_times_between(self.schedule, last, now)
        if policy == "skip":
            logger.warning("Job %s: %d scheduled time(s) up to %s were missed while beat was down; "
                           "none is run (catch-up policy skip)", self.name, len(missed), iso(current))
            self._mark_run_up_to(now)
            return schedules.schedstate(False, remaining)
        if policy == "latest":
            if len(missed) > 1:
                logger.warning("Job %s: %d scheduled times were missed while beat was down; running the latest, %s "
                               "(catch-up policy latest)", self.name, len(missed), iso(current))
            return schedules.schedstate(True, remaining)
        limit = spec.catch_up_limit if spec else 10
        pending = [
            t for t in missed[-limit:] if not JobRun.objects.working_run_exists(spec.name if spec else self.name, t)
        ]
        if len(missed) > limit:
            logger.warning("Job %s: %d scheduled times were missed while beat was down; running the last %d "
                           "(catch-up policy all, limit %d)", self.name, len(missed), limit, limit)
        if not pending:
            self._mark_run_up_to(current)
            return schedules.schedstate(False, remaining)
        if spec is not None and self._lock_held(spec):
            return schedules.schedstate(False, 1.0)  # one missed time at a time, each after the last has run
        self.catch_up_slot = pending[0]
        return schedules.schedstate(True, 1.0 if len(pending) > 1 else remaining)

    def _lock_held(self, spec: JobSpec) -> bool:
        task = self.app.tasks.get(spec.task_name)
        return task is not None and task.once_backend.holder(spec.lock_key) is not None

    def _mark_run_up_to(self, moment: dt.datetime) -> None:
        """Record ``last_run_at = moment`` here and in the database (nothing before it is due any more)."""
        self.last_run_at = self.model.last_run_at = moment
        type(self.model)._default_manager.filter(pk=self.model.pk).update(last_run_at=moment)

    def scheduled_for(self, now: dt.datetime) -> dt.datetime | None:
        """The scheduled time a message sent now belongs to; None for schedules without one (solar)."""
        if self.catch_up_slot is not None:
            return self.catch_up_slot
        try:
            return slot_for(self.schedule, now)
        except (TypeError, ValueError):
            return None

    def __next__(self):
        new = super().__next__()
        if self.catch_up_slot is not None:
            # Catching up one missed time at a time: the next one is due at once.
            new.last_run_at = new.model.last_run_at = self.catch_up_slot
        return new


class JobScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler that stamps each message with its scheduled time."""

    Entry = JobEntry

    def __init__(self, *args, **kwargs):
        self._broken_reported: dict[int, object] = {}
        self._pauses_checked_at = 0.0
        from scheduler_app.health import Heartbeat

        self._heartbeat = Heartbeat()  # /healthz's beat check (issue 9)
        super().__init__(*args, **kwargs)

    def setup_schedule(self):
        from scheduler_app.sync import sync_schedules

        try:
            for line in sync_schedules(actor="beat start-up (sync_schedules)"):
                logger.info("%s", line)
        except Exception:  # never keep beat from starting over a schedule problem
            logger.exception("Could not create missing schedules; run `manage.py sync_schedules`")
        super().setup_schedule()
        # django-celery-beat ignores the first change it sees after start-up;
        # read the marker now so a change made during the first tick (e.g. a
        # pause resumed) is loaded at once, not at the 5-minute full re-read.
        self.schedule_changed()

    def _get_crontab_exclude_query(self):
        # django-celery-beat leaves out crontabs whose hour is more than 2 h
        # from now; that would keep a daily job from catching up after beat
        # downtime. Every enabled crontab is loaded (there are few).
        return Q(pk__in=[])

    def all_as_schedule(self):
        """Every enabled task's entry.

        One whose schedule cannot be built is logged once per change, not dropped silently.
        """
        entries = {}
        for model in self.enabled_models():
            try:
                entries[model.name] = self.Entry(model, app=self.app)
            except Exception as exc:  # a ValueError from Celery's crontab, a bad time zone, …
                if self._broken_reported.get(model.pk) != model.date_changed:
                    self._broken_reported[model.pk] = model.date_changed
                    logger.error("Periodic task %r is not scheduled: its schedule cannot be built: %s",
                                 model.name, exc)
        return entries

    def tick(self, *args, **kwargs):
        self._heartbeat()
        if time.monotonic() - self._pauses_checked_at >= PAUSE_CHECK_INTERVAL_S:
            self._pauses_checked_at = time.monotonic()
            self._resume_expired_pauses()
        return super().tick(*args, **kwargs)

    def _resume_expired_pauses(self) -> None:
        from scheduler_app.schedule_services import resume_expired_pauses

        try:
            for name in resume_expired_pauses():
                logger.info("Job %s resumed: its pause ended", name)
        except Exception:
            logger.exception("Could not resume the pauses that ended")

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        """Send ``entry``'s message stamped with its scheduled time (header ``scheduled_for``).

        A scheduled time before the task's ``start_time`` is never sent.
        SIGTERM and Ctrl-C wait until the send is done: ``reserve`` moves the
        entry's ``last_run_at`` on, and beat's shutdown saves it, so a stop in
        between would mark a time run that was never sent.
        """
        from scheduler_app.task import stop_signals_deferred

        with stop_signals_deferred():
            return self._apply_async(entry, producer=producer, advance=advance, **kwargs)

    def _apply_async(self, entry, producer=None, advance=True, **kwargs):
        scheduled_for = entry.scheduled_for(timezone.now()) if isinstance(entry, JobEntry) else None
        start_time = getattr(getattr(entry, "model", None), "start_time", None)
        if scheduled_for is not None and start_time is not None and scheduled_for < start_time:
            logger.info("Periodic task %s: scheduled time %s is before its start_time %s; not sent",
                        entry.name, iso(scheduled_for), iso(start_time))
            return None
        if advance:
            entry = self.reserve(entry)
        if scheduled_for is not None:
            headers = dict(entry.options.get("headers") or {})
            headers["scheduled_for"] = iso(scheduled_for)
            entry.options = {**entry.options, "headers": headers}
        return super().apply_async(entry, producer=producer, advance=False, **kwargs)
