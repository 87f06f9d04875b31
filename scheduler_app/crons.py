"""Sentry Crons: one monitor per job, with its real schedule and time zone, checked in from the run path (issue 9).

Only scheduled runs (trigger ``beat``) check in: a manual run belongs to no
scheduled time. Each check-in carries the monitor's configuration (the
``PeriodicTask``'s crontab and time zone, or its interval in minutes), so
Sentry creates and updates the monitor from the worker, whichever process
runs beat and whatever scheduler it uses:

* the run's first attempt starts (its ``JobRun`` row is inserted): ``in_progress``;
* the run ends: ``ok`` or ``error`` with its duration, under the same
  check-in id (derived from the task id, so a retry on another worker closes
  the check-in the first attempt opened); a retry is neither, so a run that
  recovers on retry sends no error, and a run that fails all attempts sends
  one error check-in (and the Celery integration its one error event);
* a trigger skipped because an earlier run holds the lock: ``ok``, so the
  time is not a missed check-in (the engine decided, nothing failed); a
  duplicate trigger sends nothing (the time's own run checks in).

``checkin_margin`` is ``SCHEDULE_GRACE_SECONDS`` in minutes (rounded up) and
``max_runtime`` the job's soft time limit in minutes. Nothing happens
without ``SENTRY_DSN``.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from celery.signals import task_postrun
from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from scheduler_app.models import JobRun

logger = logging.getLogger("scheduler")

#: Sentry's interval units, by django-celery-beat's period names (seconds have none).
_UNITS = {"minutes": "minute", "hours": "hour", "days": "day"}


def _sentry():
    import sentry_sdk

    return sentry_sdk if sentry_sdk.get_client().is_active() else None


def check_in_id(task_id: str) -> str:
    """The check-in id of the run sent as ``task_id`` (the same in every process and attempt)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"scheduler-run:{task_id}").hex


def monitor_config(job: str) -> Any:
    """The Sentry monitor configuration of ``job``'s schedule; None when it has none Sentry can express."""
    from django_celery_beat.models import PeriodicTask

    from scheduler_app.registry import REGISTRY

    spec = REGISTRY.get(job)
    if spec is None:
        return None
    task = (PeriodicTask.objects.select_related("crontab", "interval")
            .filter(task=spec.task_name, enabled=True).order_by("name").first())
    if task is None:
        return None
    config: dict[str, Any] = {"checkin_margin": max(math.ceil(settings.SCHEDULE_GRACE_SECONDS / 60), 1),
              "max_runtime": max(math.ceil(spec.soft_time_limit / 60), 1)}
    if task.crontab is not None:
        c = task.crontab
        config["schedule"] = {"type": "crontab",
                              "value": f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"}
        config["timezone"] = str(c.timezone)
    elif task.interval is not None and task.interval.period in _UNITS:
        config["schedule"] = {"type": "interval", "value": task.interval.every, "unit": _UNITS[task.interval.period]}
        config["timezone"] = "UTC"
    else:
        return None  # seconds, solar, clocked: no Sentry schedule for them
    return config


def _check_in(job: str, task_id: str, status: str, duration_s: float | None = None) -> None:
    sentry = _sentry()
    if sentry is None:
        return
    try:
        config = monitor_config(job)
        if config is None:
            return
        from sentry_sdk.crons import capture_checkin

        capture_checkin(monitor_slug=job, check_in_id=check_in_id(task_id), status=status, duration=duration_s,
                        monitor_config=config)
    except Exception:  # monitoring must never break a run
        logger.exception("Could not send the Sentry check-in of %s", job)


@receiver(post_save, sender=JobRun, dispatch_uid="scheduler_app.crons.run_created")
def _run_created(sender, instance: JobRun, created: bool, **kwargs) -> None:
    if not created or instance.trigger != JobRun.Trigger.BEAT:
        return
    if instance.status == JobRun.Status.RUNNING:
        _check_in(instance.job, instance.task_id, "in_progress")
    elif instance.status == JobRun.Status.SKIPPED and instance.skip_reason == JobRun.SkipReason.LOCK_HELD:
        _check_in(instance.job, instance.task_id, "ok", 0.0)


@task_postrun.connect(dispatch_uid="scheduler_app.crons.postrun")
def _run_ended(sender=None, task_id=None, task=None, retval=None, state=None, **kwargs) -> None:
    if getattr(task, "spec", None) is None or state not in ("SUCCESS", "FAILURE") or _sentry() is None:
        return
    if state == "SUCCESS" and not (isinstance(retval, dict) and retval.get("status") == JobRun.Status.SUCCEEDED):
        return  # skipped: a duplicate sends nothing
    run = JobRun.objects.filter(task_id=task_id).only("job", "trigger", "status", "duration_ms").first()
    if run is None or run.trigger != JobRun.Trigger.BEAT or run.status not in (JobRun.Status.SUCCEEDED,
                                                                                JobRun.Status.FAILED):
        return
    _check_in(run.job, task_id, "ok" if run.status == JobRun.Status.SUCCEEDED else "error",
              (run.duration_ms or 0) / 1000)
