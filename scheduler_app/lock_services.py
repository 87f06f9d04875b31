"""Lock services for operators: who holds each job's lock, and the audited clear (SPEC §6).

Clearing is written to the audit log through the function named by the
``SCHEDULER_AUDIT_LOG_FUNCTION`` setting (``audit.services.create_audit_log``),
so this app never imports a domain app.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from scheduler_app.locks import LockHolder, default_backend
from scheduler_app.models import JobRun
from scheduler_app.registry import JobSpec, load_registry

logger = logging.getLogger("scheduler")


@dataclasses.dataclass(frozen=True)
class LockStatus:
    """One job's lock: ``holder`` (None when free), ``expires_at`` (aware UTC) and the holder's description."""

    spec: JobSpec
    holder: LockHolder | None
    expires_at: dt.datetime | None
    holder_text: str

    def describe(self) -> str:
        return "free" if self.holder is None else f"held by {self.holder_text}"


def lock_status(spec: JobSpec) -> LockStatus:
    """Read who holds ``spec``'s lock and until when."""
    holder = default_backend().holder(spec.lock_key)
    expires = timezone.now() + dt.timedelta(milliseconds=holder.ttl_ms) if holder else None
    return LockStatus(spec=spec, holder=holder, expires_at=expires, holder_text=JobRun.objects.describe_holder(holder))


def all_lock_statuses() -> list[LockStatus]:
    return [lock_status(spec) for _, spec in sorted(load_registry().items())]


class HolderAlive(Exception):
    """The lock's holder is still being worked on by a worker; clearing it could start a second run."""

    def __init__(self, holder: LockHolder, worker: str):
        super().__init__(f"the holder {holder.token} is still active on worker {worker}")
        self.holder, self.worker = holder, worker


def worker_working_on(task_id: str, timeout: float = 1.0) -> str | None:
    """The name of a worker that is running, or holds reserved or scheduled, ``task_id``; None if none answers so."""
    from celery import current_app

    inspect = current_app.control.inspect(timeout=timeout)
    for listing in (inspect.active, inspect.reserved, inspect.scheduled):
        for worker, requests in (listing() or {}).items():
            for request in requests or []:
                request = request.get("request", request)  # scheduled() wraps the request
                if request.get("id") == task_id:
                    return worker
    return None


def _working_run(holder: LockHolder) -> str | None:
    """The process of a RUNNING run that holds the lock and still sends heartbeats, or None (issue 11).

    Asked before the workers: a fresh heartbeat settles it at once, for a worker
    or a ``run_job --local`` on any host.

    Judged from the run's heartbeat in the database, on any host: a run whose
    heartbeat is older than 3 periods (``lost_after_seconds``), or that has
    ended, is dead, wherever its process ran (a killed worker, a killed
    ``run_job --local``).
    """
    run = JobRun.objects.filter(task_id=holder.token, status=JobRun.Status.RUNNING).only(
        "worker", "heartbeat_at", "started_at", "deferred_until").first()
    if run is None or JobRun.objects.holder_is_dead(holder.token) is not None:
        return None
    age = JobRun.objects.silent_seconds(run.pk) or 0.0  # by the database's clock, as the heartbeats are written
    return f"{run.worker} (run {run.pk}, last heartbeat {age:.0f}s ago)"


def clear_job_lock(spec: JobSpec, *, actor: str, user=None, force: bool = False) -> LockHolder | None:
    """Delete ``spec``'s lock and write ``JOB_LOCK_CLEARED`` to the audit log.

    Meant for stale locks, whose holder died before its TTL ran out. Unless
    ``force``, the holder is checked first: its run's heartbeat in the
    database (alive while younger than 3 periods), then the workers (1 s) for
    a message still queued or reserved.

    Returns the holder that was removed (None if the lock was already free).
    Raises:
        HolderAlive: a worker still works on the holder and ``force`` is False.
    """
    backend = default_backend()
    holder = backend.holder(spec.lock_key)
    if holder is None:
        return None
    if not force:
        worker = _working_run(holder) or worker_working_on(holder.token)
        if worker is not None:
            raise HolderAlive(holder, worker)
    # Only the holder that was judged stale: if it expired meanwhile and a new run took
    # the lock, that run keeps it.
    if not backend.clear_lock(spec.lock_key, token=holder.token):
        return None  # expired meanwhile: nothing of the stale holder is left to clear
    logger.warning("Job %s: lock of %s cleared by %s", spec.name, holder.token, actor)
    audit = import_string(settings.SCHEDULER_AUDIT_LOG_FUNCTION)
    audit(
        action="JOB_LOCK_CLEARED", user=user, details=f"{spec.name}: lock of {holder.token} cleared by {actor}",
        metadata={"job": spec.name, "holder": holder.token, "ttl_ms_left": holder.ttl_ms},
        entity_type="job", entity_id=spec.name,
    )
    return holder
