"""Read-only admin for the audit trail: logs are evidence, never edited by hand."""

from __future__ import annotations

from django.contrib import admin

from audit.models import ArchivedAuditLog, AuditLog
from scheduler_app.admin_base import ReadOnlyAdmin


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "action", "user", "entity_type", "entity_id", "details")
    list_filter = ("action", "entity_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("action", "details", "entity_id", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    # An exact count of millions of rows is slow on PostgreSQL; skip it.
    show_full_result_count = False
    readonly_fields = ("action", "user", "details", "metadata", "entity_type", "entity_id", "created_at")


@admin.register(ArchivedAuditLog)
class ArchivedAuditLogAdmin(ReadOnlyAdmin):
    list_display = ("original_id", "created_at", "archived_at", "action", "user", "entity_type", "entity_id")
    list_filter = ("action", "entity_type", ("archived_at", admin.DateFieldListFilter))
    search_fields = ("=original_id", "action", "details", "entity_id", "user__username")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    show_full_result_count = False
    readonly_fields = (
        "original_id", "action", "user", "details", "metadata", "entity_type", "entity_id", "created_at", "archived_at",
    )
