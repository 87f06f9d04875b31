"""``manage.py check_schedules``: are the jobs running as scheduled? (SPEC §9).

Exit 0 when every enabled job is healthy; 1 with one line per problem:
``<job> missed <time>``, ``<job> late <time> started <time>``,
``<job> overrunning run <id> since <time>``, ``<job> broken: <why>``. Works
with beat and the workers stopped (it reads the database only), so cron or a
liveness probe can run it. New missed and broken problems and failed runs are
alerted once (:mod:`scheduler_app.alerts`; ``--no-alert`` only prints).
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from scheduler_app.problems import check_schedules


class Command(BaseCommand):
    help = ("Report missed, late, overrunning and broken jobs from the schedules and the run history; "
            "exit 0 healthy, 1 with one line per problem.")

    def add_arguments(self, parser):
        parser.add_argument("--no-alert", action="store_true", help="Print only: no log, Sentry or ALERT_URLS alerts.")

    def handle(self, *args, no_alert=False, **options):
        problems = check_schedules(alert=not no_alert)
        for problem in problems:
            self.stdout.write(problem.line())
        sys.exit(1 if problems else 0)
