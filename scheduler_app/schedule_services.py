"""Schedule services: pause, resume, enable and disable, and the audit of every schedule change (SPEC §10).

Schedules live in django-celery-beat's tables. Every change to a
``PeriodicTask`` or to a crontab, interval or clocked schedule, made through
the admin form, an admin action, a command or the product's own code (which
saves models, never ``QuerySet.update``), writes one audit log with who, when
and a before/after diff of the fields that changed: model signals see every
save and delete, and :func:`acting_as` tells them who acts. Beat's own
bookkeeping (``last_run_at``, ``total_run_count``) is not a change.

Switching a task back on (re-enabling, resuming a pause) sets its
``last_run_at`` to that moment, so beat never runs a time that passed while
it was off: a pause is the operator's decision, not downtime.

django-celery-beat bumps ``PeriodicTasks.last_update`` on each of these saves;
beat sees the change within its 5-second loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask

from scheduler_app.context import iso
from scheduler_app.models import SchedulePause
from scheduler_app.schedules import next_fire_times, validate_crontab_fields

logger = logging.getLogger("scheduler")

#: The PeriodicTask fields an operator changes (beat's bookkeeping fields are left out).
TASK_FIELDS = ("name", "task", "enabled", "interval", "crontab", "solar", "clocked", "start_time", "one_off",
               "expires", "expire_seconds", "args", "kwargs", "queue", "exchange", "routing_key", "priority",
               "headers", "description")
SCHEDULE_MODEL_FIELDS: dict[type[Model], tuple[str, ...]] = {
    CrontabSchedule: ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone"),
    IntervalSchedule: ("every", "period"),
    ClockedSchedule: ("clocked_time",),
}


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who changes schedules: ``name`` for the audit log's details, ``user`` (a Django user or None)."""

    name: str
    user: Any = None


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("schedule_actor", default=None)
_action: contextvars.ContextVar[tuple[str, dict] | None] = contextvars.ContextVar("schedule_action", default=None)


@contextlib.contextmanager
def acting_as(name: str, user: Any = None) -> Iterator[Actor]:
    """Attribute the schedule changes made inside the block to ``name`` (and ``user``) in the audit log."""
    token = _actor.set(Actor(name, user))
    try:
        yield Actor(name, user)
    finally:
        _actor.reset(token)


@contextlib.contextmanager
def _audited_as(action: str, **extra: Any) -> Iterator[None]:
    """Record the PeriodicTask save inside the block as ``action`` (even without a field change).

    ``extra`` is added to the audit metadata.
    """
    token = _action.set((action, extra))
    try:
        yield
    finally:
        _action.reset(token)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return iso(value)
    return str(value)


def _snapshot(obj: Model, fields: Iterable[str]) -> dict[str, str | None]:
    return {name: _field_text(obj, name) for name in fields}


def _field_text(obj: Model, name: str) -> str | None:
    try:
        return _text(getattr(obj, name))
    except ObjectDoesNotExist:  # a schedule deleted with the task (cascade): name it by its id
        return f"#{getattr(obj, name + '_id')} (deleted)"


def _write_audit(action: str, *, entity_type: str, entity_id: object, details: str, metadata: dict) -> None:
    actor = _actor.get() or Actor("system")
    audit = import_string(settings.SCHEDULER_AUDIT_LOG_FUNCTION)
    # AuditLog.entity_id holds 64 characters; a longer task name is kept whole in the metadata.
    audit(action=action, user=actor.user, details=f"{details} by {actor.name}",
          metadata={**metadata, "actor": actor.name, "entity": str(entity_id)},
          entity_type=entity_type, entity_id=str(entity_id)[:64])


# -- signals: every save and delete is audited ---------------------------------

@receiver(pre_save, sender=PeriodicTask, dispatch_uid="scheduler_app.task_pre_save")
def _task_pre_save(sender, instance: PeriodicTask, raw: bool = False, **kwargs) -> None:
    old = PeriodicTask.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._schedule_before = _snapshot(old, TASK_FIELDS) if old else None
    if old is not None and not old.enabled and instance.enabled:
        # Switched back on: nothing that passed while it was off runs (SPEC §10).
        instance.last_run_at = getattr(instance, "_resume_since", None) or timezone.now()


@receiver(post_save, sender=PeriodicTask, dispatch_uid="scheduler_app.task_post_save")
def _task_post_save(sender, instance: PeriodicTask, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_schedule_before", None)
    after = _snapshot(instance, TASK_FIELDS)
    diff = {k: [None if before is None else before[k], v] for k, v in after.items()
            if before is None or before[k] != v}
    if created:
        diff = {k: v for k, v in diff.items() if v[1] not in (None, "", "[]", "{}")}
    override = _action.get()
    if not diff and override is None:
        return  # beat's bookkeeping (last_run_at, total_run_count)
    if override is not None:
        action, extra = override
    elif created:
        action, extra = "SCHEDULE_CREATED", {}
    elif set(diff) == {"enabled"}:
        action, extra = ("SCHEDULE_ENABLED" if instance.enabled else "SCHEDULE_DISABLED"), {}
    else:
        action, extra = "SCHEDULE_CHANGED", {}
    if instance.enabled and not created and diff.get("enabled") == ["False", "True"]:
        SchedulePause.objects.filter(periodic_task=instance).delete()  # switched on by hand: the pause is over
    changes = ", ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in diff.items())
    _write_audit(action, entity_type="periodic_task", entity_id=instance.name,
                 details=f"{action.removeprefix('SCHEDULE_').lower()} {instance.name}"
                         + (f" ({changes})" if changes else ""),
                 metadata={"diff": diff, **extra})


@receiver(post_delete, sender=PeriodicTask, dispatch_uid="scheduler_app.task_post_delete")
def _task_post_delete(sender, instance: PeriodicTask, **kwargs) -> None:
    before = _snapshot(instance, TASK_FIELDS)
    _write_audit("SCHEDULE_DELETED", entity_type="periodic_task", entity_id=instance.name,
                 details=f"deleted {instance.name}", metadata={"diff": {k: [v, None] for k, v in before.items()}})


def _schedule_pre_save(sender, instance: Model, raw: bool = False, **kwargs) -> None:
    old = sender.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._schedule_before = _snapshot(old, SCHEDULE_MODEL_FIELDS[sender]) if old else None  # type: ignore[attr-defined]


def _schedule_post_save(sender, instance: Model, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_schedule_before", None)
    after = _snapshot(instance, SCHEDULE_MODEL_FIELDS[sender])
    diff = {k: [None if before is None else before[k], v] for k, v in after.items() if before is None or before[k] != v}
    if not diff:
        return
    kind = sender._meta.model_name
    users = ", ".join(
        PeriodicTask.objects.filter(**{kind.removesuffix("schedule"): instance}).values_list("name", flat=True)
    )
    action = "SCHEDULE_CREATED" if created else "SCHEDULE_CHANGED"
    _write_audit(action, entity_type=kind, entity_id=instance.pk,
                 details=f"{action.removeprefix('SCHEDULE_').lower()} {kind} {instance}"
                         + (f" used by {users}" if users else ""),
                 metadata={"diff": diff, "periodic_tasks": users})


def _schedule_post_delete(sender, instance: Model, **kwargs) -> None:
    kind = sender._meta.model_name
    _write_audit("SCHEDULE_DELETED", entity_type=kind, entity_id=instance.pk, details=f"deleted {kind} {instance}",
                 metadata={"diff": {
                     k: [v, None] for k, v in _snapshot(instance, SCHEDULE_MODEL_FIELDS[sender]).items()
                 }})


for _model in SCHEDULE_MODEL_FIELDS:
    pre_save.connect(_schedule_pre_save, sender=_model, dispatch_uid=f"scheduler_app.{_model.__name__}.pre_save")
    post_save.connect(_schedule_post_save, sender=_model, dispatch_uid=f"scheduler_app.{_model.__name__}.post_save")
    post_delete.connect(_schedule_post_delete, sender=_model,
                        dispatch_uid=f"scheduler_app.{_model.__name__}.post_delete")


# -- services ------------------------------------------------------------------

def pause(task: PeriodicTask, *, reason: str, until: dt.datetime | None = None, actor: str,
          user: Any = None) -> SchedulePause:
    """Pause ``task`` with a reason, optionally until an aware time; audited as ``SCHEDULE_PAUSED``.

    Raises:
        ValueError: an empty reason, or ``until`` not in the future.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a pause needs a reason (--reason TEXT)")
    now = timezone.now()
    if until is not None and (until <= now or until.year > 9000):
        raise ValueError(f"until={iso(until)} is invalid: a time after now ({iso(now)}) and before the year 9000")
    with (transaction.atomic(), acting_as(actor, user),
          _audited_as("SCHEDULE_PAUSED", reason=reason, until=_text(until))):
        pause_row, _ = SchedulePause.objects.update_or_create(
            periodic_task=task, defaults={"reason": reason, "until": until, "paused_by": actor, "paused_at": now})
        task.enabled = False
        task.save()
    return pause_row


def resume(task: PeriodicTask, *, actor: str, user: Any = None, since: dt.datetime | None = None) -> bool:
    """Resume a paused (or disabled) ``task``; audited as ``SCHEDULE_RESUMED``. False if it was running already.

    It runs the scheduled times after ``since`` (aware; default now): a pause
    whose end passed while beat was down resumes from its end, so the times
    missed after it are beat downtime, for the catch-up policy.
    """
    with transaction.atomic(), acting_as(actor, user), _audited_as("SCHEDULE_RESUMED"):
        had_pause = SchedulePause.objects.filter(periodic_task=task).delete()[0] > 0
        if task.enabled and not had_pause:
            return False
        task.enabled = True
        task._resume_since = since  # read by the pre_save handler
        task.save()
    return True


def set_enabled(tasks: Iterable[PeriodicTask], enabled: bool, *, actor: str, user: Any = None) -> int:
    """Enable or disable each task by saving it (audited; enabling resumes a pause). Returns how many changed."""
    changed = 0
    for task in tasks:
        if task.enabled == enabled:
            continue
        if enabled and SchedulePause.objects.filter(periodic_task=task).exists():
            resume(task, actor=actor, user=user)
        else:
            with acting_as(actor, user):
                task.enabled = enabled
                task.save()
        changed += 1
    return changed


def resume_expired_pauses(now: dt.datetime | None = None) -> list[str]:
    """Resume every pause whose ``until`` has passed; return the names of the tasks resumed."""
    now = now or timezone.now()
    names = []
    for pause_row in SchedulePause.objects.filter(until__lte=now).select_related("periodic_task"):
        resume(pause_row.periodic_task, actor=f"beat (pause until {iso(pause_row.until)} reached)",
               since=pause_row.until)
        names.append(pause_row.periodic_task.name)
    return names


def task_schedule(task: PeriodicTask):
    """The Celery schedule beat builds for ``task`` (interval schedules aligned as beat aligns them).

    Raises:
        ValueError: the schedule cannot be built (say why, naming the field).
    """
    from scheduler_app.schedules import AlignedSchedule

    if task.crontab is not None:
        c = task.crontab
        try:
            validate_crontab_fields(c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week, tz=c.timezone)
        except ValueError as exc:
            raise ValueError(
                f"crontab '{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}': {exc}"
            ) from None
    try:
        schedule = task.schedule
    except Exception as exc:  # e.g. a solar schedule without the ephem package: ImproperlyConfigured
        raise ValueError(f"its schedule cannot be built: {type(exc).__name__}: {exc}") from None
    if task.interval is not None:
        return AlignedSchedule(schedule.run_every, anchor=task.start_time)
    return schedule


def next_times(task: PeriodicTask, count: int = 5, *, after: dt.datetime | None = None) -> list[dt.datetime]:
    """The next ``count`` scheduled times of ``task`` (aware UTC), from ``after`` or its ``start_time`` if later.

    Raises:
        ValueError: the schedule cannot be built.
        TypeError: a schedule kind without scheduled times (solar).
    """
    after = after or timezone.now()
    if task.start_time is not None and task.start_time > after:
        after = task.start_time - dt.timedelta(microseconds=1)
    return next_fire_times(task_schedule(task), after, count)


def describe_next_times(task: PeriodicTask, count: int = 5) -> list[str]:
    """``2026-11-30 09:00 CET (08:00 UTC)`` lines for the next ``count`` times, in ``TIME_ZONE`` and UTC.

    Or why there are none.
    """
    zone = timezone.get_default_timezone()
    try:
        times = next_times(task, count)
    except (ValueError, TypeError) as exc:
        return [f"none: {exc}"]
    if not times:
        return ["none in the next 5 years"]
    return [f"{t.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} ({t:%Y-%m-%d %H:%M:%S} UTC)" for t in times]
