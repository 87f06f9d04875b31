"""Read-only admin for the audit trail: logs are evidence, never edited by hand."""

from __future__ import annotations

from typing import ClassVar

from django.contrib import admin
from django.core.paginator import Paginator

from audit.models import ArchivedAuditLog, AuditLog
from scheduler_app.admin_base import ReadOnlyAdmin
from scheduler_app.paginators import EstimatedCountPaginator


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "action", "user", "entity_type", "entity_id", "details")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    search_fields = ("action", "details", "entity_id", "user__username")
    list_select_related = ("user",)
    # Fast at millions of rows (issue 9): no COUNT(*) of the whole table per page view (the
    # paginator counts at most 10,000 rows, then estimates), newest first by primary key (its
    # index); no date hierarchy and no filters by distinct values, each a full scan per view.
    show_full_result_count = False
    # typed as ModelAdmin declares it, so that the benchmark can swap in Django's counting Paginator
    paginator: ClassVar[type[Paginator]] = EstimatedCountPaginator
    ordering = ("-id",)
    readonly_fields = ("action", "user", "details", "metadata", "entity_type", "entity_id", "created_at")


@admin.register(ArchivedAuditLog)
class ArchivedAuditLogAdmin(ReadOnlyAdmin):
    list_display = ("original_id", "created_at", "archived_at", "action", "user", "entity_type", "entity_id")
    list_filter = (("archived_at", admin.DateFieldListFilter),)
    search_fields = ("=original_id", "action", "details", "entity_id", "user__username")
    list_select_related = ("user",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-id",)
    readonly_fields = (
        "original_id", "action", "user", "details", "metadata", "entity_type", "entity_id", "created_at", "archived_at",
    )
