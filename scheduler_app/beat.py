"""The beat scheduler: django-celery-beat's ``DatabaseScheduler`` with scheduled times.

``celery -A config beat -S django`` runs :class:`JobScheduler` (see
``config.celery``). It reads and writes django-celery-beat's tables like the
stock scheduler, so the admin edits schedules as usual, and adds:

* interval schedules fire on whole multiples of the interval since the epoch
  (:class:`~scheduler_app.schedules.AlignedSchedule`), the same slots in
  every beat;
* every message carries the scheduled time it belongs to (header
  ``scheduled_for``), computed from the schedule, never from the moment beat
  woke up: any number of beats emit the same (job, scheduled time) pairs and
  the job engine runs each once (SPEC §3);
* at start-up, missing schedules are created from the job registry
  (``sync_schedules``, never overwriting what an admin changed).
"""

from __future__ import annotations

import logging

from celery import schedules
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from scheduler_app.context import iso
from scheduler_app.schedules import AlignedSchedule, slot_for

logger = logging.getLogger("scheduler")


class JobEntry(ModelEntry):
    """A ``PeriodicTask`` row whose interval schedule is aligned to the epoch."""

    def __init__(self, model, app=None):
        super().__init__(model, app=app)
        schedule = getattr(self, "schedule", None)
        if schedule is not None and type(schedule) is schedules.schedule:
            self.schedule = AlignedSchedule(schedule.run_every, nowfun=schedule.nowfun, app=self.app)


class JobScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler that stamps each message with its scheduled time."""

    Entry = JobEntry

    def setup_schedule(self):
        from scheduler_app.sync import sync_schedules

        try:
            for line in sync_schedules():
                logger.info("%s", line)
        except Exception:  # never keep beat from starting over a schedule problem
            logger.exception("Could not create missing schedules; run `manage.py sync_schedules`")
        super().setup_schedule()

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        try:
            scheduled_for = slot_for(entry.schedule, timezone.now())
        except (TypeError, ValueError):
            scheduled_for = None
        if scheduled_for is not None:
            headers = dict(entry.options.get("headers") or {})
            headers["scheduled_for"] = iso(scheduled_for)
            entry.options = {**entry.options, "headers": headers}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
