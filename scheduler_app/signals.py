"""Celery signal handlers of the job engine (connected by ``SchedulerAppConfig.ready``)."""

from __future__ import annotations

import logging

from celery import signals
from django.db import close_old_connections

from scheduler_app.context import parse_iso
from scheduler_app.models import JobRun
from scheduler_app.task import JobTask

logger = logging.getLogger("scheduler")


@signals.task_revoked.connect
def release_revoked_run(sender=None, request=None, terminated=False, signum=None, expired=False, **kwargs) -> None:
    """A job message revoked, expired or terminated: release its lock and say so in the history.

    Without this, a message that never ran (``expires`` passed while it
    waited, ``celery purge``, ``revoke``) would keep the job's lock until its
    TTL and leave no trace. Runs in the worker's main process.
    """
    if not isinstance(sender, JobTask) or request is None:
        return
    task_id = request.id
    spec = sender.spec
    sender.once_backend.clear_lock(spec.lock_key, token=task_id)
    why = "expired before a worker started it" if expired else (
        f"terminated by signal {signum}" if terminated else "revoked before it ran")
    request_kwargs = request.kwargs or {}
    close_old_connections()
    JobRun.objects.record_revoked(
        job=spec.name, task_id=task_id, trigger=request_kwargs.get("trigger", JobRun.Trigger.MANUAL),
        scheduled_for=parse_iso(request_kwargs.get("scheduled_for")), dry_run=bool(request_kwargs.get("dry_run")),
        why=why,
    )
    logger.warning("Job %s: task %s %s; its lock was released", spec.name, task_id, why)
