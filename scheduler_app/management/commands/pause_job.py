"""``manage.py pause_job NAME --reason TEXT [--until ISO-TIME]``: pause a job's schedule, audited (SPEC §10).

Exit codes: 0 paused, 2 unknown job, missing reason, bad or past ``--until``,
or no schedule (run ``sync_schedules``).
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler_app import schedule_services
from scheduler_app.context import iso
from scheduler_app.registry import get_spec

EXIT_USAGE = 2


def command_actor(command: str) -> str:
    """``manage.py <command> by <OS user>``: who the audit log names for a command."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown user"
    return f"manage.py {command} by {user}"


def job_task(name: str) -> PeriodicTask:
    """The ``PeriodicTask`` of job ``name``.

    Raises:
        CommandError: (exit 2) an unknown job, listing the valid names, or a job without a schedule.
    """
    try:
        get_spec(name)
    except KeyError as exc:
        raise CommandError(exc.args[0], returncode=EXIT_USAGE) from None
    task = PeriodicTask.objects.filter(name=name).first()
    if task is None:
        raise CommandError(f"job {name!r} has no schedule yet; run `manage.py sync_schedules`", returncode=EXIT_USAGE)
    return task


class Command(BaseCommand):
    help = ("Pause a job: it does not run until resumed (resume_job, the admin, or --until). When resumed it runs "
            "only the scheduled times after that moment. Audited. Exit codes: 0 paused, 2 usage error.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="Job name, e.g. archive-audit-logs.")
        parser.add_argument("--reason", required=True, help="Why (written to the audit log and shown in the admin).")
        parser.add_argument("--until", help="Resume by itself at this ISO 8601 time, e.g. 2026-12-01T06:00:00Z "
                                            "(without an offset: TIME_ZONE).")

    def handle(self, *args, name: str, reason: str, until: str | None = None, **options):
        task = job_task(name)
        until_at = None
        if until:
            try:
                until_at = dt.datetime.fromisoformat(until.replace("Z", "+00:00"))
                if timezone.is_naive(until_at):
                    until_at = timezone.make_aware(until_at)
                if until_at.year > 9000:
                    raise OverflowError(until)
                until_at.astimezone(dt.UTC)
            except (ValueError, OverflowError):
                raise CommandError(f"--until={until!r} is invalid: an ISO 8601 time such as 2026-12-01T06:00:00Z, "
                                   "before the year 9000", returncode=EXIT_USAGE) from None
        try:
            pause = schedule_services.pause(task, reason=reason, until=until_at, actor=command_actor("pause_job"))
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from None
        self.stdout.write(f"{name}: paused" + (f" until {iso(pause.until)}" if pause.until else " until resumed")
                          + f": {pause.reason}")
