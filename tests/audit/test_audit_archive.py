"""archive_old_logs: SPEC §5 "Archive".

Right values worked out by hand: with now = 2026-03-31 12:00:00 UTC and 90
days, counting back 31 days (March) reaches 2026-02-28, 28 more (February)
2026-01-31, 31 more (January) 2025-12-31: the cutoff is 2025-12-31 12:00:00.
"""

from __future__ import annotations

import datetime as dt
import logging
import tracemalloc

import pytest
import time_machine
from django.db import DatabaseError, IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog
from audit.services import archive_old_logs
from tests.dbfaults import REJECTED, rejecting
from tests.factories import at, make_audit_log, make_user

pytestmark = pytest.mark.django_db

NOW = at("2026-03-31 12:00:00")


@time_machine.travel(NOW, tick=False)
def test_cutoff_is_strict_to_the_second():
    # given: one log a second before the cutoff, one at it, one after it
    before = make_audit_log(created_at=at("2025-12-31 11:59:59"))
    exactly = make_audit_log(created_at=at("2025-12-31 12:00:00"))
    after = make_audit_log(created_at=at("2026-01-01 00:00:00"))

    # when
    moved = archive_old_logs(days=90)

    # then: only the 11:59:59 log moved
    assert moved == 1
    assert set(AuditLog.objects.values_list("id", flat=True)) == {exactly.id, after.id}
    assert list(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == [before.id]


@time_machine.travel(NOW, tick=False)
def test_archived_row_keeps_every_field_and_its_original_id():
    # given: an old log with every field filled in
    user = make_user(username="auditor")
    log = make_audit_log(
        created_at=at("2025-10-02 08:15:30"),
        action="CONTRIBUTION_CONFIRMED",
        user=user,
        details="Contribution 17 confirmed",
        metadata={"amount": "50.00", "tags": ["a", "b"], "nested": {"ok": True}},
        entity_type="contribution",
        entity_id="17",
    )

    # when
    archive_old_logs(days=90)

    # then: the live row is gone and the archive has the same values
    assert not AuditLog.objects.filter(id=log.id).exists()
    archived = ArchivedAuditLog.objects.get(original_id=log.id)
    assert archived.action == "CONTRIBUTION_CONFIRMED"
    assert archived.user_id == user.id
    assert archived.details == "Contribution 17 confirmed"
    assert archived.metadata == {"amount": "50.00", "tags": ["a", "b"], "nested": {"ok": True}}
    assert archived.entity_type == "contribution"
    assert archived.entity_id == "17"
    assert archived.created_at == at("2025-10-02 08:15:30")
    assert archived.archived_at == NOW


@time_machine.travel(NOW, tick=False)
def test_second_run_moves_nothing():
    # given: two old logs, archived once
    make_audit_log(created_at=at("2025-11-01 00:00:00"))
    make_audit_log(created_at=at("2025-12-01 00:00:00"))
    assert archive_old_logs(days=90) == 2

    # when
    moved_again = archive_old_logs(days=90)

    # then
    assert moved_again == 0
    assert sorted(ArchivedAuditLog.objects.values_list("created_at", flat=True)) == [
        at("2025-11-01 00:00:00"), at("2025-12-01 00:00:00"),
    ]
    assert AuditLog.objects.count() == 0


@time_machine.travel(NOW, tick=False)
def test_moves_in_batches_by_ascending_id_with_one_insert_per_batch():
    # given: 7 old logs interleaved with 2 recent ones, batches of 3
    old_ids = []
    for day in range(1, 8):
        old_ids.append(make_audit_log(created_at=at(f"2025-11-{day:02d} 10:00:00")).id)
        if day in (3, 5):
            make_audit_log(created_at=at("2026-03-30 10:00:00"))

    # when
    with CaptureQueriesContext(connection) as queries:
        moved = archive_old_logs(days=90, batch_size=3)

    # then: 3 + 3 + 1 rows, in three INSERT ... SELECT statements, recent logs untouched
    assert moved == 7
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 3
    live, archive = (connection.ops.quote_name(m._meta.db_table) for m in (AuditLog, ArchivedAuditLog))
    assert all(sql.startswith(f"INSERT INTO {archive} ") and " SELECT " in sql and f" FROM {live} " in sql
               for sql in inserts)
    assert sorted(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == old_ids
    assert AuditLog.objects.count() == 2


@time_machine.travel(NOW, tick=False)
def test_should_stop_ends_the_run_between_batches_and_the_next_run_finishes():
    # given: 7 old logs, batches of 3, and a stop request after the first batch
    old_ids = [make_audit_log(created_at=at(f"2025-11-{day:02d} 10:00:00")).id for day in range(1, 8)]
    answers = iter([False, True])

    # when
    moved = archive_old_logs(days=90, batch_size=3, should_stop=lambda: next(answers))

    # then: the first batch (the 3 lowest ids) moved, the rest stayed live
    assert moved == 3
    assert sorted(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == old_ids[:3]
    assert sorted(AuditLog.objects.values_list("id", flat=True)) == old_ids[3:]

    # when: the next run is not asked to stop
    moved_next = archive_old_logs(days=90, batch_size=3)

    # then
    assert moved_next == 4
    assert AuditLog.objects.count() == 0


@time_machine.travel(NOW, tick=False)
def test_dry_run_counts_and_changes_nothing():
    # given
    make_audit_log(created_at=at("2025-12-31 11:59:59"))
    make_audit_log(created_at=at("2025-06-01 00:00:00"))
    make_audit_log(created_at=at("2026-03-31 11:00:00"))

    # when
    would_move = archive_old_logs(days=90, dry_run=True)

    # then
    assert would_move == 2
    assert AuditLog.objects.count() == 3
    assert ArchivedAuditLog.objects.count() == 0


@time_machine.travel(NOW, tick=False)
def test_defaults_come_from_settings(settings):
    # given: a 10-day retention; the cutoff is 2026-03-21 12:00:00
    settings.AUDIT_LOG_RETENTION_DAYS = 10
    settings.ARCHIVE_BATCH_SIZE = 1
    second_before = make_audit_log(created_at=at("2026-03-21 11:59:59"))
    day_before = make_audit_log(created_at=at("2026-03-20 00:00:00"))
    at_cutoff = make_audit_log(created_at=at("2026-03-21 12:00:00"))

    # when
    with CaptureQueriesContext(connection) as queries:
        moved = archive_old_logs()

    # then: two rows, one batch each; the log at the cutoff stays
    assert moved == 2
    assert len([q for q in queries.captured_queries if q["sql"].startswith("INSERT")]) == 2
    assert sorted(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == sorted(
        [second_before.id, day_before.id]
    )
    assert list(AuditLog.objects.values_list("id", flat=True)) == [at_cutoff.id]


@time_machine.travel(NOW, tick=False)
def test_logs_the_final_line(caplog):
    # given
    make_audit_log(created_at=at("2025-12-01 00:00:00"))

    # when
    with caplog.at_level(logging.INFO, logger="audit"):
        archive_old_logs(days=90)

    # then
    assert ("audit", logging.INFO, "Archived 1 audit logs older than 90 days") in caplog.record_tuples


@time_machine.travel(NOW, tick=False)
def test_a_failing_batch_is_rolled_back_whole():
    # given: the archive already holds the original id of one old log (a
    # corrupted state), so the batch's INSERT violates original_id's uniqueness
    first = make_audit_log(created_at=at("2025-11-01 00:00:00"))
    second = make_audit_log(created_at=at("2025-11-02 00:00:00"))
    ArchivedAuditLog.objects.create(original_id=second.id, action="X", created_at=at("2025-11-02 00:00:00"))

    # when
    with pytest.raises(IntegrityError):
        archive_old_logs(days=90)

    # then: nothing of the batch moved, both logs are still live
    assert set(AuditLog.objects.values_list("id", flat=True)) == {first.id, second.id}
    assert list(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == [second.id]


@pytest.mark.parametrize("refused", ["every delete", "the second batch's delete"])
@pytest.mark.django_db(transaction=True)
@time_machine.travel(NOW, tick=False)
def test_a_batch_whose_delete_fails_moves_nothing(refused):
    # given: 7 old logs and a recent one, batches of 3 ([1-3], [4-6], [7]), and a database that
    # refuses the DELETE (after the batch's INSERT into the archive ran) of every live row, or
    # only of the 5th old log, in the second batch
    old_ids = [make_audit_log(created_at=at(f"2025-11-{day:02d} 10:00:00")).id for day in range(1, 8)]
    recent = make_audit_log(created_at=at("2026-03-30 10:00:00"))
    when = "1 = 1" if refused == "every delete" else f"OLD.id = {old_ids[4]}"

    # when
    with rejecting("DELETE", AuditLog._meta.db_table, when=when), pytest.raises(DatabaseError, match=REJECTED):
        archive_old_logs(days=90, batch_size=3)

    # then: the failed batch added nothing to the archive and removed nothing from the live
    # table; the batches before it moved whole, the ones after it never started
    moved = [] if refused == "every delete" else old_ids[:3]
    assert sorted(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == moved
    assert sorted(AuditLog.objects.values_list("id", flat=True)) == [i for i in old_ids if i not in moved] + [recent.id]


@time_machine.travel(NOW, tick=False)
def test_deleting_a_user_keeps_their_logs():
    # given: a live and an archived log of the same user
    user = make_user()
    make_audit_log(created_at=at("2025-11-01 00:00:00"), user=user)
    live = make_audit_log(created_at=at("2026-03-30 00:00:00"), user=user)
    archive_old_logs(days=90)

    # when
    user.delete()

    # then: both logs remain, without the user
    live.refresh_from_db()
    assert live.user_id is None
    assert ArchivedAuditLog.objects.get().user_id is None


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        archive_old_logs(days=-1)
    with pytest.raises(ValueError):
        archive_old_logs(batch_size=0)


@time_machine.travel(NOW, tick=False)
def test_logs_progress_at_most_every_five_seconds(caplog, monkeypatch):
    # given: 4 old rows moved one per batch, each batch taking 3 s on a fake clock
    for day in range(1, 5):
        make_audit_log(created_at=at(f"2025-11-{day:02d} 00:00:00"))
    ticks = iter([0.0, 3.0, 6.0, 9.0, 12.0])
    monkeypatch.setattr("audit.services.monotonic", lambda: next(ticks))

    # when
    with caplog.at_level(logging.INFO, logger="audit"):
        archive_old_logs(days=90, batch_size=1)

    # then: progress after 6 s (2 rows, 2/6 rows/s, 2 rows left = 6 s) and after 12 s, then the final line
    assert [message for _, _, message in caplog.record_tuples] == [
        "Archiving audit logs: 2 of 4 moved (0.3 rows/s, about 6s left)",
        "Archiving audit logs: 4 of 4 moved (0.3 rows/s, about 0s left)",
        "Archived 4 audit logs older than 90 days",
    ]


def _archive_peak_bytes(rows: int) -> int:
    """Peak Python memory (tracemalloc) of archiving ``rows`` old logs in batches of 100."""
    old = timezone.now() - dt.timedelta(days=200)
    AuditLog.objects.bulk_create(
        (AuditLog(action="USER_LOGIN", details=f"row {i}", metadata={"i": i}, entity_type="user", entity_id=str(i),
                  created_at=old) for i in range(rows)),
        batch_size=2000,
    )
    tracemalloc.start()
    try:
        moved = archive_old_logs(days=90, batch_size=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert moved == rows
    return peak


@pytest.mark.django_db(transaction=True)
def test_memory_does_not_grow_with_the_number_of_rows():
    # given: a warm-up run (first-use allocations: query compilation, imports), outside the
    # test's transaction so that batches commit as in production (no savepoints)
    _archive_peak_bytes(100)

    # when: 1,000 rows, then 10 times as many (10 and 100 batches)
    small = _archive_peak_bytes(1_000)
    large = _archive_peak_bytes(10_000)

    # then: the 9,000 extra rows cost at most 128 KiB, under 15 bytes a row: nothing is held
    # per row (a Python int alone is 28 bytes). The headroom is for what is bounded but grows
    # with the number of batches, such as the sqlite3 module's weak references to its
    # cursors (pruned every 200 cursors).
    assert large <= small + 128 * 1024, (small, large)
