"""``manage.py clear_lock NAME``: show or forcibly clear a job's lock (SPEC §6)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from scheduler_app.jobs import get_spec
from scheduler_app.lockadmin import clear_job_lock, lock_status


class Command(BaseCommand):
    help = (
        "Clear a stale job lock (one whose holder died and whose TTL has not yet run out). "
        "The clear is written to the audit log. With --show, only print who holds it and until when."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Job name, e.g. archive-audit-logs.")
        parser.add_argument("--show", action="store_true", help="Only show the holder.")

    def handle(self, *args, name: str, show: bool = False, **options):
        try:
            spec = get_spec(name)
        except KeyError as exc:
            raise CommandError(exc.args[0], returncode=2) from None
        status = lock_status(spec)
        self.stdout.write(f"{name}: {status.describe()}")
        if show or status.holder is None:
            return
        clear_job_lock(spec, actor=f"manage.py clear_lock by {_whoami()}")
        self.stdout.write(f"{name}: lock cleared (was held by {status.holder.token})")


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown user"
