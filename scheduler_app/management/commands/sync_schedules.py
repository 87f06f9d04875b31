"""``manage.py sync_schedules [--dry-run | --check]``.

Create missing job schedules, apply env overrides (SPEC §1, §10).
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from scheduler_app.sync import schedule_differences, sync_schedules


class Command(BaseCommand):
    help = (
        "Create a django-celery-beat PeriodicTask for every registered job that has none, and apply "
        "SCHEDULE_<JOB> crontab overrides from the environment. Never changes a schedule an admin "
        "edited otherwise. Idempotent. --check compares instead: exit 0 when the database matches the "
        "registry defaults plus SCHEDULE_* overrides, 1 with one line per difference."
    )

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--dry-run", action="store_true",
                           help="Say what would change (and each job's next scheduled time); change nothing.")
        group.add_argument("--check", action="store_true",
                           help="Exit 1 with one line per difference from the registry plus SCHEDULE_* overrides.")

    def handle(self, *args, dry_run: bool = False, check: bool = False, **options):
        if check:
            differences = schedule_differences()
            for line in differences:
                self.stdout.write(line)
            if differences:
                sys.exit(1)
            self.stdout.write("All job schedules match the registry defaults and SCHEDULE_* overrides.")
            return
        for line in sync_schedules(dry_run=dry_run):
            self.stdout.write(line)
