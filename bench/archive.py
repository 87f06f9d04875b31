"""Archive: ``audit.services.archive_old_logs`` against plain SQL and a naive ORM loop.

Every measurement starts from a freshly seeded live table holding ``rows``
logs older than the 90-day cutoff followed by a tenth as many recent ones
(which stay), ``created_at`` growing with the id as in a real log, and an
empty archive:

* the job: ``archive_old_logs(days=90, now=NOW)`` with the settings' batch
  size, run in a child process (``python -m bench.archive_child``) that reports
  its time and its peak RSS (``ru_maxrss``), at ``rows`` and at a tenth of it;
* the limit: one transaction of ``INSERT INTO archive SELECT ... WHERE
  created_at < cutoff`` and ``DELETE FROM live WHERE created_at < cutoff``;
* the naive loop: for each old row, in its own transaction, ``create`` the
  archive row and ``delete`` the live one (on a smaller sample).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

from django.db import connection, transaction

from audit.models import ArchivedAuditLog, AuditLog
from bench import sql
from bench.environment import ROOT

DAYS = 90
NOW = dt.datetime(2026, 3, 31, 12, 0, 0, tzinfo=dt.UTC)
CUTOFF = NOW - dt.timedelta(days=DAYS)
_SHARED = ("action", "user", "details", "metadata", "entity_type", "entity_id", "created_at")


def seed(old_rows: int) -> None:
    """Empty both tables and insert ``old_rows`` old logs, then ``old_rows // 10`` recent ones.

    Like a real append-only log, ``created_at`` grows with the id: the old
    rows are spread evenly over the 270 days before the cutoff (the oldest
    first), the recent ones over the 89 days after it.
    """
    sql.flush(AuditLog, ArchivedAuditLog)
    recent_rows = old_rows // 10
    total = old_rows + recent_rows
    old_step = max(270 * 86400 // old_rows, 1)
    recent_step = max(89 * 86400 // max(recent_rows, 1), 1)
    select = (
        "CASE i %% 4 WHEN 0 THEN 'USER_LOGIN' WHEN 1 THEN 'GROUP_STATUS_CHANGED' "
        "WHEN 2 THEN 'CONTRIBUTION_CONFIRMED' ELSE 'SETTINGS_CHANGED' END, "
        "NULL, "
        "'bench event ' || i || ' by the system, entity group', "
        + sql.json_param("'{\"ip\": \"10.0.' || (i %% 256) || '.' || (i %% 250) || '\", "
                         "\"request_id\": \"req-' || i || '\"}'")
        + ", 'group', CAST(i %% 50000 AS TEXT), "
        f"CASE WHEN i > {old_rows} THEN {sql.ts_plus_seconds(f'(i - {old_rows} - 1) * {recent_step}')} "
        f"ELSE {sql.ts_plus_seconds(f'-1 - ({old_rows} - i) * {old_step}')} END"
    )
    inserted = sql.insert_series(AuditLog, _SHARED, select, total, [sql.ts(CUTOFF), sql.ts(CUTOFF)])
    if inserted != total:
        raise RuntimeError(f"seeded {inserted} audit logs, expected {total}")
    sql.settle(AuditLog, ArchivedAuditLog)


def old_count() -> int:
    return AuditLog.objects.filter(created_at__lt=CUTOFF).count()


def run_job_in_child() -> dict:
    """Archive in a fresh ``python -m bench.archive_child``; return its report (rows, seconds, peak RSS)."""
    connection.close()  # nothing of ours stays open on the tables it moves
    completed = subprocess.run(
        [sys.executable, "-m", "bench.archive_child"], cwd=ROOT, env=dict(os.environ),
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.archive_child failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def raw_sql() -> tuple[int, float]:
    """The limit: one INSERT ... SELECT and one DELETE in one transaction; return (rows, seconds)."""
    live, archive = sql.table(AuditLog), sql.table(ArchivedAuditLog)
    shared = sql.columns(AuditLog, *_SHARED)
    created_at = sql.column(AuditLog, "created_at")
    insert = (
        f"INSERT INTO {archive} ({sql.column(ArchivedAuditLog, 'original_id')}, {shared}, "
        f"{sql.column(ArchivedAuditLog, 'archived_at')}) "
        f"SELECT {sql.column(AuditLog, 'id')}, {shared}, %s FROM {live} WHERE {created_at} < %s"
    )
    delete = f"DELETE FROM {live} WHERE {created_at} < %s"
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert, [sql.ts(NOW), sql.ts(CUTOFF)])
        inserted = cursor.rowcount
        cursor.execute(delete, [sql.ts(CUTOFF)])
        deleted = cursor.rowcount
    seconds = time.perf_counter() - started
    if inserted != deleted:
        raise RuntimeError(f"raw SQL archived {inserted} rows but deleted {deleted}")
    return inserted, seconds


def naive_orm() -> tuple[int, float]:
    """Row by row through the ORM, one transaction per row; return (rows, seconds)."""
    started = time.perf_counter()
    moved = 0
    for log in AuditLog.objects.filter(created_at__lt=CUTOFF).order_by("id"):
        with transaction.atomic():
            ArchivedAuditLog.objects.create(
                original_id=log.pk, action=log.action, user_id=log.user_id, details=log.details,
                metadata=log.metadata, entity_type=log.entity_type, entity_id=log.entity_id,
                created_at=log.created_at, archived_at=NOW,
            )
            log.delete()
        moved += 1
    return moved, time.perf_counter() - started


def run(*, rows: int, naive_rows: int, log=print) -> dict[str, float | int]:
    """Measure the job, the plain SQL limit, the naive loop and peak memory; return the ``archive.*`` keys."""
    log(f"archive: seeding {rows:,} old audit logs (+{rows // 10:,} recent)")
    seed(rows)
    log("archive: the job in a child process (time and peak RSS)")
    full = run_job_in_child()
    _check_moved("job", full["moved"], rows)

    log(f"archive: seeding {rows:,} again for plain SQL")
    seed(rows)
    raw_rows, raw_seconds = raw_sql()
    _check_moved("plain SQL", raw_rows, rows)

    small_rows = rows // 10
    log(f"archive: seeding {small_rows:,} for the small memory probe")
    seed(small_rows)
    small = run_job_in_child()
    _check_moved("job (small)", small["moved"], small_rows)

    log(f"archive: seeding {naive_rows:,} for the naive ORM loop")
    seed(naive_rows)
    naive_moved, naive_seconds = naive_orm()
    _check_moved("naive ORM loop", naive_moved, naive_rows)
    sql.flush(AuditLog, ArchivedAuditLog)

    rows_per_s = rows / full["seconds"]
    raw_rows_per_s = rows / raw_seconds
    naive_rows_per_s = naive_rows / naive_seconds
    return {
        "archive.rows": rows,
        "archive.seconds": round(full["seconds"], 3),
        "archive.rows_per_s": round(rows_per_s),
        "archive.raw_sql_seconds": round(raw_seconds, 3),
        "archive.raw_sql_rows_per_s": round(raw_rows_per_s),
        "archive.ratio_to_raw_sql": round(rows_per_s / raw_rows_per_s, 3),
        "archive.naive_orm_rows": naive_rows,
        "archive.naive_orm_rows_per_s": round(naive_rows_per_s),
        "archive.ratio_to_naive_orm": round(rows_per_s / naive_rows_per_s, 1),
        "archive.batch_size": full["batch_size"],
        "archive.peak_rss_mb": round(full["peak_rss_mb"], 1),
        "archive.peak_rss_mb_small": round(small["peak_rss_mb"], 1),
        "archive.rows_small": small_rows,
        "archive.rss_after_setup_mb": round(full["rss_after_setup_mb"], 1),
        "archive.peak_rss_ratio": round(full["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }


def _check_moved(what: str, moved: int, expected: int) -> None:
    if moved != expected:
        raise RuntimeError(f"archive: {what} moved {moved} rows, expected {expected}")
    left = old_count()
    if left:
        raise RuntimeError(f"archive: {what} left {left} old rows in the live table")
