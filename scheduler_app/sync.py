"""Create the schedules of the registered jobs in django-celery-beat's tables, and compare them (SPEC §1, §10).

One ``PeriodicTask`` per job, named after the job, with a ``CrontabSchedule``
in ``TIME_ZONE``. Idempotent: an existing ``PeriodicTask`` keeps its schedule,
so what an admin edited stays, except where the operator sets a
``SCHEDULE_<JOB>`` environment variable, whose crontab is then applied
(SPEC §2). Its task path follows the registry: when a job's task moved to
another module (SPEC §3 allows it), the schedule is pointed at the new path.
Every write is audited (:mod:`scheduler_app.schedule_services`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app.registry import JobSpec, load_registry
from scheduler_app.schedule_services import acting_as, describe_next_times, task_schedule


def _crontab_row(expression: str) -> CrontabSchedule:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    row, _ = CrontabSchedule.objects.get_or_create(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
        day_of_week=day_of_week, timezone=settings.TIME_ZONE,
    )
    return row


def _crontab_text(row: CrontabSchedule | None) -> str:
    if row is None:
        return "-"
    return f"{row.minute} {row.hour} {row.day_of_month} {row.month_of_year} {row.day_of_week}"


def _env_name(job: str) -> str:
    return f"SCHEDULE_{job.upper().replace('-', '_')}"


def _broken(task: PeriodicTask) -> str | None:
    try:
        task_schedule(task)
    except Exception as exc:  # ValueError from a bad crontab, a bad time zone, …
        return str(exc)
    return None


def sync_schedules(*, dry_run: bool = False, actor: str = "manage.py sync_schedules") -> list[str]:
    """Create missing schedules and apply ``SCHEDULE_<JOB>`` overrides; return one line per job.

    With ``dry_run`` nothing is written and the lines say what would be,
    with each job's next scheduled time. A schedule that cannot be built is
    reported as broken, never as unchanged. ``actor`` is who the audit log names.
    """
    lines: list[str] = []
    overrides: dict[str, str] = settings.JOB_SCHEDULE_OVERRIDES
    with transaction.atomic(), acting_as(actor):
        for name, spec in sorted(load_registry().items()):
            existing = PeriodicTask.objects.select_related("crontab").filter(name=name).first()
            override = overrides.get(name)
            if existing is not None and existing.task != spec.task_name:
                # The job's name identifies its schedule and the registry says
                # which task runs it: a job whose module moved keeps its
                # schedule (and admin edits) and runs from the new path.
                old_task = existing.task
                if not dry_run:
                    existing.task = spec.task_name
                    existing.save(update_fields=["task"])
                verb = "would run" if dry_run else "now runs"
                lines.append(f"{name}: {verb} task {spec.task_name!r} instead of {old_task!r}")
            if existing is None:
                expression = override or spec.crontab
                task = PeriodicTask(name=name, task=spec.task_name, crontab=_crontab_row(expression),
                                    description=spec.description, enabled=True)
                if not dry_run:
                    task.save()
                lines.append(f"{name}: {'would be created' if dry_run else 'created'} with crontab \"{expression}\" "
                             f"({settings.TIME_ZONE})" + (" from the environment" if override else "")
                             + _next(task, dry_run))
                continue
            if override and (existing.crontab is None or _crontab_text(existing.crontab) != override
                             or existing.crontab.timezone.key != settings.TIME_ZONE):
                existing.crontab = _crontab_row(override)
                existing.interval = None
                if not dry_run:
                    existing.save()
                verb = "would be applied" if dry_run else "applied"
                lines.append(f"{name}: crontab \"{override}\" {verb} from {_env_name(name)}" + _next(existing, dry_run))
                continue
            broken = _broken(existing)
            if broken:
                lines.append(f"{name}: broken: {broken}; fix it in the admin (Periodic tasks) or set {_env_name(name)}")
                continue
            kind = (f"crontab \"{_crontab_text(existing.crontab)}\" ({existing.crontab.timezone})"
                    if existing.crontab else str(existing.schedule))
            state = "enabled" if existing.enabled else "disabled"
            lines.append(f"{name}: unchanged ({kind}, {state})" + _next(existing, dry_run))
            if existing.crontab and str(existing.crontab.timezone) != settings.TIME_ZONE:
                lines.append(
                    f"{name}: warning: its crontab is read in {existing.crontab.timezone}, TIME_ZONE is "
                    f"{settings.TIME_ZONE}; change it in the admin (Periodic tasks) or set {_env_name(name)}"
                )
        if dry_run:
            transaction.set_rollback(True)
    return lines


def _next(task: PeriodicTask, dry_run: bool) -> str:
    if not dry_run:
        return ""
    return f"; next: {describe_next_times(task, 1)[0]}" if task.enabled else "; next: none (disabled)"


def schedule_differences() -> list[str]:
    """One line per difference between the database and the registry defaults plus ``SCHEDULE_*`` overrides (SPEC §10).

    Compared per job: the ``PeriodicTask`` exists, runs the job's task, has a
    crontab (not another kind of schedule) equal to the expected one, read in
    ``TIME_ZONE``, and can be built. Pauses and disabled tasks are the
    operator's decisions, not differences.
    """
    overrides: dict[str, str] = settings.JOB_SCHEDULE_OVERRIDES
    lines = []
    for name, spec in sorted(load_registry().items()):
        expected = overrides.get(name) or spec.crontab
        source = _env_name(name) if name in overrides else "the registry default"
        task = PeriodicTask.objects.select_related("crontab", "interval").filter(name=name).first()
        if task is None:
            lines.append(f"{name}: no PeriodicTask; expected crontab \"{expected}\" ({source}); run sync_schedules")
            continue
        lines.extend(_task_differences(name, spec, task, expected, source))
    return lines


def _task_differences(name: str, spec: JobSpec, task: PeriodicTask, expected: str, source: str) -> list[str]:
    lines = []
    if task.task != spec.task_name:
        lines.append(f"{name}: runs task {task.task!r}, expected {spec.task_name!r}")
    if task.crontab is None:
        lines.append(f"{name}: schedule is {task.schedule!r}, expected crontab \"{expected}\" ({source})")
        return lines
    if _crontab_text(task.crontab) != expected:
        lines.append(
            f"{name}: crontab \"{_crontab_text(task.crontab)}\" in the database, expected \"{expected}\" ({source})"
        )
    if str(task.crontab.timezone) != settings.TIME_ZONE:
        lines.append(f"{name}: crontab read in {task.crontab.timezone}, expected TIME_ZONE {settings.TIME_ZONE}")
    broken = _broken(task)
    if broken:
        lines.append(f"{name}: broken: {broken}")
    return lines
