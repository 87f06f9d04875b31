"""Create the schedules of the registered jobs in django-celery-beat's tables.

One ``PeriodicTask`` per job, named after the job, with a ``CrontabSchedule``
in ``TIME_ZONE``. Idempotent: an existing ``PeriodicTask`` keeps its schedule,
so what an admin edited stays, except where the operator sets a
``SCHEDULE_<JOB>`` environment variable, whose crontab is then applied
(SPEC §2). Its task path follows the registry: when a job's task moved to
another module (SPEC §3 allows it), the schedule is pointed at the new path.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app.jobs import load_registry


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


def sync_schedules(*, dry_run: bool = False) -> list[str]:
    """Create missing schedules and apply ``SCHEDULE_<JOB>`` overrides; return one line per job.

    With ``dry_run`` nothing is written and the lines say what would be.
    """
    lines: list[str] = []
    overrides: dict[str, str] = settings.JOB_SCHEDULE_OVERRIDES
    with transaction.atomic():
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
                if not dry_run:
                    PeriodicTask.objects.create(
                        name=name, task=spec.task_name, crontab=_crontab_row(expression),
                        description=spec.description, enabled=True,
                    )
                lines.append(f"{name}: {'would be created' if dry_run else 'created'} with crontab \"{expression}\" ({settings.TIME_ZONE})"
                             + (" from the environment" if override else ""))
                continue
            if override and (existing.crontab is None or _crontab_text(existing.crontab) != override
                             or existing.crontab.timezone.key != settings.TIME_ZONE):
                if not dry_run:
                    existing.crontab = _crontab_row(override)
                    existing.interval = None
                    existing.save()
                verb = "would be applied" if dry_run else "applied"
                lines.append(f"{name}: crontab \"{override}\" {verb} from SCHEDULE_{name.upper().replace('-', '_')}")
                continue
            kind = (f"crontab \"{_crontab_text(existing.crontab)}\" ({existing.crontab.timezone})"
                    if existing.crontab else str(existing.schedule))
            state = "enabled" if existing.enabled else "disabled"
            lines.append(f"{name}: unchanged ({kind}, {state})")
            if existing.crontab and str(existing.crontab.timezone) != settings.TIME_ZONE:
                lines.append(
                    f"{name}: warning: its crontab is read in {existing.crontab.timezone}, TIME_ZONE is "
                    f"{settings.TIME_ZONE}; change it in the admin (Periodic tasks) or set "
                    f"SCHEDULE_{name.upper().replace('-', '_')}"
                )
        if dry_run:
            transaction.set_rollback(True)
    return lines
