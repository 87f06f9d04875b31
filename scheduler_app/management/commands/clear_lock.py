"""``manage.py clear_lock NAME``: show or forcibly clear a job's lock (SPEC §6)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from scheduler_app.lock_services import HolderAlive, clear_job_lock, lock_status
from scheduler_app.registry import get_spec


class Command(BaseCommand):
    help = (
        "Clear a stale job lock (one whose holder died and whose TTL has not yet run out). "
        "The workers are asked first: a lock whose run is still active is left alone unless --force. "
        "The clear is written to the audit log. With --show, only print who holds it and until when. "
        "Exit codes: 0 cleared or free, 1 holder still active, 2 unknown job."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Job name, e.g. archive-audit-logs.")
        parser.add_argument("--show", action="store_true", help="Only show the holder.")
        parser.add_argument("--force", action="store_true",
                            help="Clear even if a worker still runs the holder (a second run may then start).")

    def handle(self, *args, name: str, show: bool = False, force: bool = False, **options):
        try:
            spec = get_spec(name)
        except KeyError as exc:
            raise CommandError(exc.args[0], returncode=2) from None
        from redis.exceptions import RedisError

        try:
            self._handle(name, spec, show=show, force=force)
        except RedisError as exc:
            self.stderr.write(f"Redis is not reachable ({type(exc).__name__}: {exc}); start it or set REDIS_URL")
            sys.exit(1)

    def _handle(self, name, spec, *, show: bool, force: bool) -> None:
        status = lock_status(spec)
        self.stdout.write(f"{name}: {status.describe()}")
        if show or status.holder is None:
            return
        try:
            holder = clear_job_lock(spec, actor=f"manage.py clear_lock by {_whoami()}", force=force)
        except HolderAlive as alive:
            self.stderr.write(f"{name}: not cleared: {alive}; it will release the lock when it ends. "
                              "--force clears it anyway (a second run may then start alongside).")
            sys.exit(1)
        if holder is None:
            self.stdout.write(f"{name}: the lock was released meanwhile")
            return
        self.stdout.write(f"{name}: lock cleared (was held by {holder.token})")


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown user"
