"""``manage.py sync_schedules``: create missing job schedules, apply env overrides (SPEC §1)."""

from django.core.management.base import BaseCommand

from scheduler_app.sync import sync_schedules


class Command(BaseCommand):
    help = (
        "Create a django-celery-beat PeriodicTask for every registered job that has none, and apply "
        "SCHEDULE_<JOB> crontab overrides from the environment. Never changes a schedule an admin "
        "edited otherwise. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say what would change and change nothing.")

    def handle(self, *args, dry_run: bool = False, **options):
        for line in sync_schedules(dry_run=dry_run):
            self.stdout.write(line)
