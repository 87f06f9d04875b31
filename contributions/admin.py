"""Admin for contributions, weekly summaries and their deliveries."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from contributions.models import Contribution, SummaryDelivery, SummaryOptOut, WeeklySummary
from contributions.services import opt_in_to_summaries, opt_out_of_summaries
from scheduler_app.admin_base import ReadOnlyAdmin


@admin.register(Contribution)
class ContributionAdmin(admin.ModelAdmin):
    list_display = ("id", "group", "membership", "round", "amount", "status", "created_at", "confirmed_at")
    list_filter = ("status", ("confirmed_at", admin.DateFieldListFilter), "group__currency")
    search_fields = ("group__name", "membership__user__username")
    date_hierarchy = "created_at"
    list_select_related = ("group", "membership", "round")
    raw_id_fields = ("group", "membership", "round")


class SummaryDeliveryInline(admin.TabularInline):
    model = SummaryDelivery
    extra = 0
    fields = ("membership", "status", "sent_at", "reason")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


@admin.register(WeeklySummary)
class WeeklySummaryAdmin(admin.ModelAdmin):
    list_display = ("id", "group", "week_start", "contribution_count", "total_amount", "created_at")
    list_filter = ("week_start",)
    search_fields = ("group__name",)
    list_select_related = ("group",)
    # Figures are what members were sent; the weekly job writes them.
    readonly_fields = ("group", "week_start", "contribution_count", "total_amount", "created_at")
    inlines = (SummaryDeliveryInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        # Deleting a summary or its deliveries would let the next run email the week again.
        return False


@admin.register(SummaryDelivery)
class SummaryDeliveryAdmin(ReadOnlyAdmin):
    """Read-only: a delivery row is what makes a second send impossible (SPEC §4)."""

    list_display = ("id", "summary", "membership", "status", "sent_at", "reason", "run_id")
    list_filter = ("status", ("sent_at", admin.DateFieldListFilter), "summary__week_start")
    list_select_related = ("summary", "membership")
    raw_id_fields = ("summary", "membership")


@admin.register(SummaryOptOut)
class SummaryOptOutAdmin(admin.ModelAdmin):
    """Members who want no summaries: add one to opt a member out, delete it to opt them back in (both audited)."""

    list_display = ("id", "user", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    fields = ("user", "source")

    def get_readonly_fields(self, request: HttpRequest, obj: SummaryOptOut | None = None):
        return ("user", "source") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: SummaryOptOut, form, change: bool) -> None:
        if change:
            return  # nothing to change: an opt-out is added or deleted
        opt_out_of_summaries(user=obj.user, source=SummaryOptOut.Source.ADMIN, actor=request.user)
        obj.pk = SummaryOptOut.objects.get(user=obj.user).pk

    def delete_model(self, request: HttpRequest, obj: SummaryOptOut) -> None:
        opt_in_to_summaries(user=obj.user, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for opt_out in queryset.select_related("user"):
            opt_in_to_summaries(user=opt_out.user, actor=request.user)
