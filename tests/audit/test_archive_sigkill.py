"""The archive survives SIGKILL at any point: every row is in exactly one table (SPEC §5, issues 3 and 12).

A real worker process runs ``archive-audit-logs`` in batches of 50 and is
SIGKILLed inside a batch's transaction, after its INSERT into the archive
ran: just before the batch's DELETE, or just after it (before the COMMIT).
After each kill the live table and the archive are checked row by row, and a
final run finishes the work.

The kill points are deterministic: the worker loads ``tests.probes``, which
stops it at its N-th ``DELETE FROM audit_auditlog`` (before or after it)
and tells the test through Redis; the test kills it while it waits there. So
each kill lands at the same statement of the same batch on every run, and
the rows moved before it are known exactly: the (N - 1) batches that
committed before the killed one.
"""

from __future__ import annotations

import datetime as dt
import signal

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog
from scheduler_app.jobs import get_spec
from scheduler_app.locks import OwnedRedisBackend
from scheduler_app.models import JobRun
from tests.probes import PAUSED, wait_until_paused
from tests.processes import CeleryProcess, process_env, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

OLD_ROWS = 2_000
NEW_ROWS = 100
BATCH = 50
#: Where each of the three workers is killed: before or after the DELETE of its N-th batch.
KILL_POINTS = [("before", 1), ("after", 2), ("before", 4)]


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
        i = int(values[2])
        assert values == (f"row {i}", {"i": i}, str(i), old + dt.timedelta(seconds=i))
    assert AuditLog.objects.filter(details__startswith="new ").count() == NEW_ROWS
    return len(archived)


def test_sigkill_during_the_archive_loses_and_doubles_nothing(worker, job_redis):
    # given 2,000 logs older than 90 days and 100 newer ones
    old = seed_logs()
    spec = get_spec("archive-audit-logs")
    task = current_app.tasks[spec.task_name]
    backend = OwnedRedisBackend(settings.CELERY_ONCE["settings"])
    delete = f"DELETE FROM {connection.ops.quote_name(AuditLog._meta.db_table)}"
    moved_before = 0
    # when a worker archiving in batches of 50 is SIGKILLed inside a batch's transaction, three times
    for when, batch in KILL_POINTS:
        victim = CeleryProcess(
            "worker-archive-victim",
            ["worker", "-l", "INFO", "-c", "1", "-n", "archive-victim@%h", "-Q", "victim",
             "--without-gossip", "--without-mingle"],
            process_env(ARCHIVE_BATCH_SIZE=str(BATCH), EXTRA_JOB_MODULES="tests.jobs,tests.probes",
                        TEST_PAUSE_SQL=f"{when}:{batch}:{delete}"),
        )
        try:
            wait_for_worker(victim)
            task.apply_async(kwargs={"trigger": "manual"}, queue="victim")
            assert wait_until_paused(job_redis, victim).endswith(f" {when} statement {batch}")
            victim.kill(signal.SIGKILL)
            victim.proc.wait(10)
        finally:
            victim.stop()
            victim.cleanup()
            job_redis.delete(PAUSED)
        # then every row is in exactly one of the tables, with all its fields
        moved = assert_each_row_in_exactly_one_table(old)
        # and exactly the batches committed before the killed one moved; the killed one did not
        assert moved == moved_before + (batch - 1) * BATCH, (when, batch)
        moved_before = moved
        # and the killed run's lock, 600 s TTL, is taken over by the next run as soon as the run's
        # heartbeat is 3 periods (3 x 1 s in the tests) old: the database judges the holder dead
        assert backend.holder(spec.lock_key) is not None
        wait_for(lambda: JobRun.objects.lost(job=spec.name).exists(), 15, message="a stale heartbeat")
    # and the next run finishes the work
    done = task.apply_async(kwargs={"trigger": "manual"})
    wait_for(lambda: JobRun.objects.filter(task_id=done.id, status="SUCCEEDED").exists(), 120)
    assert assert_each_row_in_exactly_one_table(old) == OLD_ROWS
    assert JobRun.objects.get(task_id=done.id).items_processed == OLD_ROWS - moved_before == 1_800
    assert JobRun.objects.filter(job="archive-audit-logs", status="FAILED", error__contains="Worker lost").count() == 3
