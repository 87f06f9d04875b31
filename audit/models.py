"""Audit log and its archive (SPEC §4).

``AuditLog`` is the live, append-only trail. Rows older than
``AUDIT_LOG_RETENTION_DAYS`` are moved to ``ArchivedAuditLog`` by
:func:`audit.services.archive_old_logs`, which copies the columns with set-based
SQL: the two models must keep the same columns (the archive adds
``original_id`` and ``archived_at``), and ``audit.services.ARCHIVE_COLUMNS``
checks that at import time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditLogFields(models.Model):
    """Columns shared by the live log and the archive."""

    #: What happened, e.g. ``USER_LOGIN`` or ``GROUP_STATUS_CHANGED``.
    action = models.CharField(max_length=64)
    #: Who did it; null for the system. SET_NULL keeps the log when the user is deleted (SPEC §4).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    #: Human-readable description, e.g. ``PENDING -> ACTIVE``.
    details = models.TextField(blank=True, default="")
    #: Structured data about the event; a JSON object.
    metadata = models.JSONField(blank=True, default=dict)
    #: The kind of object the event is about, e.g. ``group``; empty when none.
    entity_type = models.CharField(max_length=64, blank=True, default="")
    #: The object's primary key as text, so any kind of key fits; empty when none.
    entity_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        entity = f" {self.entity_type}:{self.entity_id}" if self.entity_type else ""
        return f"{self.action}{entity} at {self.created_at:%Y-%m-%d %H:%M:%S}"  # type: ignore[attr-defined]


class AuditLog(AuditLogFields):
    """One event in the live audit trail; append-only."""

    # A default rather than auto_now_add, so imports and tests can set the time;
    # indexed because the archive job selects ``created_at < cutoff`` (SPEC §5).
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "audit log"
        verbose_name_plural = "audit logs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["entity_type", "entity_id"], name="audit_log_entity_idx"),
            models.Index(fields=["action", "created_at"], name="audit_log_action_idx"),
        ]


class ArchivedAuditLog(AuditLogFields):
    """An audit log moved out of the live table, every field unchanged (SPEC §5)."""

    #: The live row's primary key; unique, so a row can never be archived twice.
    original_id = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField(db_index=True)
    archived_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "archived audit log"
        verbose_name_plural = "archived audit logs"
        ordering = ["-created_at", "-original_id"]
        indexes = [
            models.Index(fields=["entity_type", "entity_id"], name="audit_archive_entity_idx"),
        ]
