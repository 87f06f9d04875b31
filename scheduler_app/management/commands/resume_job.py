"""``manage.py resume_job NAME``: resume a paused (or disabled) job from now on, audited (SPEC §10).

Exit codes: 0 resumed (or already running), 2 unknown job or no schedule.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from scheduler_app import schedule_services
from scheduler_app.management.commands.pause_job import command_actor, job_task


class Command(BaseCommand):
    help = ("Resume a paused or disabled job. It runs only the scheduled times after this moment, never one "
            "that passed while it was off. Audited. Exit codes: 0 resumed or already running, 2 usage error.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="Job name, e.g. archive-audit-logs.")

    def handle(self, *args, name: str, **options):
        task = job_task(name)
        if schedule_services.resume(task, actor=command_actor("resume_job")):
            self.stdout.write(f"{name}: resumed; next: {schedule_services.describe_next_times(task, 1)[0]}")
        else:
            self.stdout.write(f"{name}: was not paused or disabled; nothing changed")
