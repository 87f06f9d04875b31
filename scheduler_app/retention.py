"""Run history retention: ``JobRun`` rows older than ``RUN_HISTORY_DAYS`` are deleted in batches (issue 9)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from scheduler_app.models import JobRun
from scheduler_app.ops_models import BeatHeartbeat, JobAlert

logger = logging.getLogger("scheduler")

#: Rows deleted per transaction.
PRUNE_BATCH_SIZE = 5000


def prune_job_runs(*, days: int | None = None, batch_size: int = PRUNE_BATCH_SIZE, dry_run: bool = False,
                   now: dt.datetime | None = None, should_stop: Callable[[], bool] | None = None) -> int:
    """Delete finished runs that started more than ``days`` (default ``RUN_HISTORY_DAYS``) ago; return how many.

    RUNNING runs are never deleted, however old (one may be overrunning).
    Batches of ``batch_size`` by primary key, each in its own transaction, so
    memory and lock time stay bounded; stops between batches when
    ``should_stop()`` says so. Old alerts and heartbeats of stopped beats go
    with them. ``dry_run`` counts only.
    """
    days = settings.RUN_HISTORY_DAYS if days is None else days
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    old = JobRun.objects.filter(started_at__lt=cutoff).exclude(status=JobRun.Status.RUNNING)
    if dry_run:
        return old.count()
    deleted = 0
    while not (should_stop and should_stop()):
        with transaction.atomic():
            ids = list(old.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            deleted += JobRun.objects.filter(pk__in=ids).delete()[0]
    JobAlert.objects.filter(created_at__lt=cutoff).delete()
    BeatHeartbeat.objects.filter(seen_at__lt=cutoff).delete()
    logger.info("Pruned %d job runs older than %d days", deleted, days)
    return deleted
