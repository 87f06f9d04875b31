"""The archive survives SIGKILL at any point: every row is in exactly one table (SPEC §5, issue 3).

A real worker process runs ``archive-audit-logs`` in small batches and is
SIGKILLed at several points of the run; after each kill the live table and
the archive are checked row by row, and a final run finishes the work.
"""

from __future__ import annotations

import datetime as dt
import signal

import pytest
from celery import current_app
from django.conf import settings
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog
from scheduler_app.jobs import get_spec
from scheduler_app.locks import OwnedRedisBackend
from scheduler_app.models import JobRun
from tests.processes import CeleryProcess, process_env, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

OLD_ROWS = 40_000
NEW_ROWS = 500


def seed_logs() -> dt.datetime:
    now = timezone.now()
    old = now - dt.timedelta(days=200)
    AuditLog.objects.bulk_create(
        (AuditLog(action="USER_LOGIN", details=f"row {i}", metadata={"i": i}, entity_type="user", entity_id=str(i),
                  created_at=old + dt.timedelta(seconds=i)) for i in range(OLD_ROWS)),
        batch_size=2000,
    )
    AuditLog.objects.bulk_create(
        (AuditLog(action="USER_LOGIN", details=f"new {i}", metadata={"i": i}, entity_type="user", entity_id=f"n{i}",
                  created_at=now - dt.timedelta(days=1)) for i in range(NEW_ROWS)),
        batch_size=2000,
    )
    return old


def assert_each_row_in_exactly_one_table(old: dt.datetime) -> int:
    live = {r[0]: r[1:] for r in AuditLog.objects.filter(action="USER_LOGIN", details__startswith="row ")
            .values_list("id", "details", "metadata", "entity_id", "created_at")}
    archived = {r[0]: r[1:] for r in ArchivedAuditLog.objects
                .values_list("original_id", "details", "metadata", "entity_id", "created_at")}
    assert not live.keys() & archived.keys(), "a row is in both tables"
    assert len(live) + len(archived) == OLD_ROWS, "a row is in neither table"
    for values in archived.values():
        i = values[2] and int(values[2])
        assert values == (f"row {i}", {"i": i}, str(i), old + dt.timedelta(seconds=i))
    assert AuditLog.objects.filter(details__startswith="new ").count() == NEW_ROWS
    return len(archived)


def test_sigkill_during_the_archive_loses_and_doubles_nothing(worker, job_redis):
    # given 40,000 logs older than 90 days and 500 newer ones
    old = seed_logs()
    spec = get_spec("archive-audit-logs")
    task = current_app.tasks[spec.task_name]
    backend = OwnedRedisBackend(settings.CELERY_ONCE["settings"])
    moved_before = 0
    # when a worker archiving in batches of 50 is SIGKILLed at three points of the run
    for kill_after in (1, 8_000, 16_000):
        victim = CeleryProcess(
            "worker-archive-victim",
            ["worker", "-l", "INFO", "-c", "1", "-n", "archive-victim@%h", "-Q", "victim", "--without-gossip", "--without-mingle"],
            process_env(ARCHIVE_BATCH_SIZE="50"),
        )
        try:
            wait_for_worker(victim)
            result = task.apply_async(kwargs={"trigger": "manual"}, queue="victim")
            wait_for(lambda: ArchivedAuditLog.objects.count() >= moved_before + kill_after
                     or JobRun.objects.filter(task_id=result.id, status="SUCCEEDED").exists(), 60, interval=0.01)
            victim.kill(signal.SIGKILL)
            victim.proc.wait(10)
        finally:
            victim.stop()
            victim.cleanup()
        # then every row is in exactly one of the tables, with all its fields
        moved = assert_each_row_in_exactly_one_table(old)
        assert moved >= moved_before
        assert moved < OLD_ROWS, "the run finished before the kill; the kill point proves nothing"
        moved_before = moved
        # (the killed run's lock would expire after its 600 s TTL; the operator clears it)
        backend.clear_lock(spec.lock_key)
    # and the next run finishes the work
    done = task.apply_async(kwargs={"trigger": "manual"})
    wait_for(lambda: JobRun.objects.filter(task_id=done.id, status="SUCCEEDED").exists(), 120)
    assert assert_each_row_in_exactly_one_table(old) == OLD_ROWS
    assert JobRun.objects.get(task_id=done.id).items_processed == OLD_ROWS - moved_before
    assert JobRun.objects.filter(job="archive-audit-logs", status="FAILED", error__contains="Worker lost").count() == 3
