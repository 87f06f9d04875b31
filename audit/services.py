"""Writing audit logs and archiving old ones (SPEC §4, §5 "Archive").

Public functions:

* :func:`create_audit_log` - write one log.
* :func:`log_entity_events` - write one log per entity in one set-based
  statement (used by ``groups`` for status changes).
* :func:`bulk_create_audit_logs` - write many logs of any kind, fast
  (``COPY`` / multi-row INSERTs; used by ``seed_demo_data``).
* :func:`archive_old_logs` - move logs older than the retention period to
  ``ArchivedAuditLog``, batch by batch, with set-based SQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Field, Max, Model
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog

logger = logging.getLogger("audit")

#: Seconds between two progress lines of a long archive run.
PROGRESS_INTERVAL_SECONDS = 5.0


class ArchiveIntegrityError(RuntimeError):
    """A batch would have left a row in both tables or in neither; it was rolled back."""


def _column(model: type[Model], name: str) -> str:
    """The database column of ``model``'s concrete field ``name`` (narrowed for the type checker)."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a field with a database column")
    return field.column


def _shared_columns() -> list[str]:
    """Column names that ``AuditLog`` and ``ArchivedAuditLog`` both have, in ``AuditLog`` order.

    Raises:
        RuntimeError: the archive lacks a live column, so archiving would lose data.
    """
    # a concrete field always has a column (Django's definition of concrete); the check narrows str | None
    live = [f.column for f in AuditLog._meta.concrete_fields if not f.primary_key and f.column is not None]
    archive = {f.column for f in ArchivedAuditLog._meta.concrete_fields}
    missing = [column for column in live if column not in archive]
    if missing:
        raise RuntimeError(f"ArchivedAuditLog lacks the AuditLog columns {missing}; add them before archiving")
    return live


#: Columns copied unchanged from the live table to the archive (checked at import).
ARCHIVE_COLUMNS: list[str] = _shared_columns()


def create_audit_log(
    *,
    action: str,
    user: Any | None = None,
    details: str = "",
    metadata: dict[str, Any] | None = None,
    entity_type: str = "",
    entity_id: object = "",
) -> AuditLog:
    """Write one audit log (SPEC §4).

    Args:
        action: what happened, e.g. ``"USER_LOGIN"``; must not be empty.
        user: the acting ``settings.AUTH_USER_MODEL`` instance, or None for the system.
        details: a human-readable description.
        metadata: a JSON-serialisable dict; None stores ``{}``.
        entity_type: the kind of object concerned, e.g. ``"group"``.
        entity_id: the object's primary key; stored as text.

    Returns:
        The saved :class:`AuditLog`.

    Raises:
        ValueError: ``action`` is empty.
    """
    if not action:
        raise ValueError("action must not be empty")
    return AuditLog.objects.create(
        action=action,
        user=user,
        details=details,
        metadata=metadata if metadata is not None else {},
        entity_type=entity_type,
        entity_id=str(entity_id) if entity_id != "" else "",
    )


def log_entity_events(
    *,
    action: str,
    entity_type: str,
    entity_ids: Iterable[object],
    details: str = "",
    metadata: dict[str, Any] | None = None,
    created_at: dt.datetime | None = None,
) -> int:
    """Write one system audit log (no user) per entity, in one statement.

    The ids travel as one JSON array parameter that the database unpacks
    (``json_each`` on SQLite, ``jsonb_array_elements_text`` on PostgreSQL), so
    the query count stays 1 however many entities there are; ``bulk_create``
    would need one INSERT per 142 rows on SQLite (999 parameters a query).
    Call it inside the transaction that made the change, so the change and
    its logs commit together (SPEC §5).

    Args:
        action: e.g. ``"GROUP_STATUS_CHANGED"``.
        entity_type: e.g. ``"group"``.
        entity_ids: primary keys, stored as text in ``entity_id``.
        details: the same description for every row, e.g. ``"PENDING -> ACTIVE"``.
        metadata: the same JSON object for every row; None stores ``{}``.
        created_at: aware datetime; defaults to ``timezone.now()``.

    Returns:
        The number of rows written (0 without a query when ``entity_ids`` is empty).

    Raises:
        ValueError: ``action`` is empty.
    """
    if not action:
        raise ValueError("action must not be empty")
    ids = [str(entity_id) for entity_id in entity_ids]
    if not ids:
        return 0
    created_at = created_at or timezone.now()
    metadata = metadata if metadata is not None else {}
    alias = router.db_for_write(AuditLog)
    connection = connections[alias]
    if connection.vendor not in ("sqlite", "postgresql"):
        # Portable fallback; several INSERTs on backends with parameter limits.
        AuditLog.objects.using(alias).bulk_create(
            AuditLog(action=action, details=details, metadata=metadata, entity_type=entity_type,
                     entity_id=entity_id, created_at=created_at)
            for entity_id in ids
        )
        return len(ids)

    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        source = "jsonb_array_elements_text(%s::jsonb) AS ids(value)"
        metadata_placeholder = "%s::jsonb"
    else:
        source = "json_each(%s) AS ids"
        metadata_placeholder = "%s"
    meta = AuditLog._meta
    columns = ", ".join(quote(_column(AuditLog, name)) for name in (
        "action", "user", "details", "metadata", "entity_type", "entity_id", "created_at",
    ))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "
        f"SELECT %s, NULL, %s, {metadata_placeholder}, %s, CAST(ids.value AS TEXT), %s FROM {source}"
    )
    params = [
        action,
        details,
        json.dumps(metadata),
        entity_type,
        connection.ops.adapt_datetimefield_value(created_at),
        json.dumps(ids),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


class NewAuditLog(NamedTuple):
    """One log for :func:`bulk_create_audit_logs`: the fields of :func:`create_audit_log`, plus ``created_at``."""

    action: str
    #: The acting user's primary key, or None for the system.
    user_id: int | None
    details: str
    #: A JSON-serialisable dict.
    metadata: dict[str, Any]
    entity_type: str
    #: The object's primary key as text, or "".
    entity_id: str
    #: An aware datetime.
    created_at: dt.datetime


#: Logs per INSERT of :func:`bulk_create_audit_logs` (off PostgreSQL): 7,000
#: parameters, below SQLite's default limit of 32,766.
BULK_ROWS_PER_INSERT = 1000

#: The columns :func:`bulk_create_audit_logs` writes, in :class:`NewAuditLog` order.
_BULK_FIELDS = ("action", "user", "details", "metadata", "entity_type", "entity_id", "created_at")


def bulk_create_audit_logs(logs: Iterable[NewAuditLog]) -> int:
    """Write many audit logs as fast as the database takes them; return how many were written.

    For bulk loads such as demo data, where ``bulk_create`` is too slow: the
    values go to the database as they are, without model instances (the ORM's
    per-field preparation made 100,000 rows take ten times longer), with
    ``COPY`` on PostgreSQL and INSERTs of :data:`BULK_ROWS_PER_INSERT` rows
    elsewhere. ``logs`` is read lazily, so memory holds one INSERT's rows at a
    time. Not atomic by itself: call it inside a transaction for all or nothing.

    Raises:
        ValueError: a log's ``action`` is empty (logs before it may be written).
    """
    connection = connections[router.db_for_write(AuditLog)]
    ops = connection.ops
    meta = AuditLog._meta
    table = ops.quote_name(meta.db_table)
    columns = ", ".join(ops.quote_name(_column(AuditLog, name)) for name in _BULK_FIELDS)
    written = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for log in logs:
                    copy.write_row(_bulk_values(log))
                    written += 1
            return written
        row_placeholder = "(" + ", ".join(["%s"] * len(_BULK_FIELDS)) + ")"
        logs = iter(logs)
        while batch := list(itertools.islice(logs, BULK_ROWS_PER_INSERT)):
            params: list[Any] = []
            for log in batch:
                values = _bulk_values(log)
                values[-1] = ops.adapt_datetimefield_value(values[-1])
                params.extend(values)
            placeholders = ", ".join([row_placeholder] * len(batch))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {placeholders}", params)
            written += len(batch)
    return written


def _bulk_values(log: NewAuditLog) -> list[Any]:
    """A log's column values, in :data:`_BULK_FIELDS` order, with the metadata as JSON text."""
    if not log.action:
        raise ValueError("action must not be empty")
    return [log.action, log.user_id, log.details, json.dumps(log.metadata), log.entity_type, log.entity_id,
            log.created_at]


def archive_old_logs(
    *,
    days: int | None = None,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], object] | None = None,
) -> int:
    """Move audit logs older than ``days`` days to the archive (SPEC §5 "Archive").

    A log moves when ``created_at < now - days`` (strictly: with now =
    2026-03-31 12:00:00 UTC and 90 days, 2025-12-31 11:59:59 moves and
    12:00:00 stays). Steps:

    1. Count the rows to move (for the progress estimate and ``dry_run``).
    2. Find the next batch's upper id bound: the ``batch_size``-th id above the
       previous batch's bound, in ascending primary-key order (only one id is
       fetched, so memory does not grow with the table).
    3. In one transaction, ``INSERT INTO archive ... SELECT ... FROM live``
       for the rows in the bound range older than the cutoff, then ``DELETE``
       the live rows whose ids are now in the archive. The counts must match,
       otherwise the batch is rolled back (:class:`ArchiveIntegrityError`):
       no row is ever in both tables or in neither, even if the worker dies.
    4. Check ``should_stop()`` before each batch; stopping leaves the rest
       for the next run, which simply starts again from the lowest old id.

    Progress (rows moved, rows/s, estimated time left) goes to the ``audit``
    logger at most every :data:`PROGRESS_INTERVAL_SECONDS`, then one final
    line ``Archived N audit logs older than D days``.

    Args:
        days: retention in days (>= 0); defaults to ``settings.AUDIT_LOG_RETENTION_DAYS``.
        now: aware datetime the cutoff counts back from; defaults to ``timezone.now()``.
            Also stored as each row's ``archived_at``.
        batch_size: rows per transaction (>= 1); defaults to ``settings.ARCHIVE_BATCH_SIZE``.
        dry_run: count the rows that would move and change nothing.
        should_stop: called before each batch; True stops the run cleanly.
        on_progress: called after each committed batch with (rows moved so far, rows to move).

    Returns:
        The number of rows moved (in a dry run: that would move). A second run
        with the same ``now`` returns 0.

    Raises:
        ValueError: negative ``days``, ``batch_size`` below 1, or a naive ``now``.
        ArchiveIntegrityError: a batch's INSERT and DELETE counts differed (rolled back).
        django.db.IntegrityError: an old log's id is already in the archive
            (``original_id`` is unique); the batch is rolled back.
    """
    days = settings.AUDIT_LOG_RETENTION_DAYS if days is None else days
    batch_size = settings.ARCHIVE_BATCH_SIZE if batch_size is None else batch_size
    if days < 0:
        raise ValueError(f"days={days!r} is invalid: a number of days >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: a number of rows >= 1")
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    cutoff = now - dt.timedelta(days=days)

    old = AuditLog.objects.filter(created_at__lt=cutoff)
    total = old.count()
    if dry_run:
        logger.info("Dry run: would archive %d audit logs older than %d days", total, days)
        return total

    mover = _BatchMover(cutoff=cutoff, archived_at=now)
    moved = 0
    last_id: int | None = None
    stopped = False
    started = last_report = monotonic()
    # The cutoff is fixed, so the count bounds the loop and a finished run
    # costs no extra bound query; if rows vanish meanwhile, the bound query
    # returns None and ends the loop.
    while moved < total:
        if should_stop is not None and should_stop():
            stopped = True
            break
        upper = _batch_upper_bound(old, after_id=last_id, batch_size=batch_size)
        if upper is None:
            break
        moved += mover.move(after_id=last_id, up_to_id=upper)
        last_id = upper
        if on_progress is not None:
            on_progress(moved, total)
        clock = monotonic()
        if clock - last_report >= PROGRESS_INTERVAL_SECONDS:
            last_report = clock
            _log_progress(moved=moved, total=total, elapsed=clock - started)

    if stopped:
        logger.info(
            "Archived %d audit logs older than %d days; stopped early, about %d left for the next run",
            moved, days, max(total - moved, 0),
        )
    else:
        logger.info("Archived %d audit logs older than %d days", moved, days)
    return moved


def _batch_upper_bound(old, *, after_id: int | None, batch_size: int) -> int | None:
    """The highest id of the next batch of at most ``batch_size`` old rows, or None when none is left."""
    remaining = old.order_by("id")
    if after_id is not None:
        remaining = remaining.filter(id__gt=after_id)
    # Only the batch's last id is fetched: OFFSET batch_size-1 LIMIT 1.
    bound = list(remaining.values_list("id", flat=True)[batch_size - 1 : batch_size])
    if bound:
        return bound[0]
    # Fewer than batch_size rows are left: the last batch ends at the highest one.
    return remaining.aggregate(highest=Max("id"))["highest"]


def _log_progress(*, moved: int, total: int, elapsed: float) -> None:
    rate = moved / elapsed if elapsed > 0 else 0.0
    left = max(total - moved, 0)
    eta = f"about {left / rate:.0f}s left" if rate > 0 else "time left unknown"
    logger.info("Archiving audit logs: %d of %d moved (%.1f rows/s, %s)", moved, total, rate, eta)


class _BatchMover:
    """Builds the two statements of a batch once and runs them per batch."""

    def __init__(self, *, cutoff: dt.datetime, archived_at: dt.datetime) -> None:
        self.alias = router.db_for_write(ArchivedAuditLog)
        self.connection = connections[self.alias]
        ops = self.connection.ops
        quote = ops.quote_name
        live = quote(AuditLog._meta.db_table)
        archive = quote(ArchivedAuditLog._meta.db_table)
        live_id = quote(_column(AuditLog, AuditLog._meta.pk.name))
        original_id = quote(_column(ArchivedAuditLog, "original_id"))
        archived_at_column = quote(_column(ArchivedAuditLog, "archived_at"))
        created_at = quote(_column(AuditLog, "created_at"))
        shared = ", ".join(quote(column) for column in ARCHIVE_COLUMNS)
        self.insert_head = (
            f"INSERT INTO {archive} ({original_id}, {shared}, {archived_at_column}) "
            f"SELECT {live_id}, {shared}, %s FROM {live} WHERE {created_at} < %s AND {live_id} <= %s"
        )
        self.insert_lower = f" AND {live_id} > %s"
        # Delete exactly the ids that are now in the archive, not "whatever
        # matches the predicate again": on PostgreSQL (READ COMMITTED) each
        # statement sees a fresh snapshot, so a row committed in between must
        # not be deleted unarchived.
        self.delete_head = (
            f"DELETE FROM {live} WHERE {live_id} IN "
            f"(SELECT {original_id} FROM {archive} WHERE {original_id} <= %s"
        )
        self.delete_lower = f" AND {original_id} > %s"
        self.cutoff = ops.adapt_datetimefield_value(cutoff)
        self.archived_at = ops.adapt_datetimefield_value(archived_at)

    def move(self, *, after_id: int | None, up_to_id: int) -> int:
        """Move the old rows with ``after_id < id <= up_to_id``; return how many moved.

        Raises:
            ArchiveIntegrityError: INSERT and DELETE counts differ; the batch is rolled back.
        """
        insert_sql, insert_params = self.insert_head, [self.archived_at, self.cutoff, up_to_id]
        delete_sql, delete_params = self.delete_head, [up_to_id]
        if after_id is not None:
            insert_sql += self.insert_lower
            insert_params.append(after_id)
            delete_sql += self.delete_lower
            delete_params.append(after_id)
        delete_sql += ")"
        with transaction.atomic(using=self.alias), self.connection.cursor() as cursor:
            cursor.execute(insert_sql, insert_params)
            inserted = cursor.rowcount
            cursor.execute(delete_sql, delete_params)
            deleted = cursor.rowcount
            if inserted != deleted:
                raise ArchiveIntegrityError(
                    f"batch of ids ({after_id}, {up_to_id}] archived {inserted} rows but deleted {deleted}; rolled back"
                )
        return inserted
