"""Admin for groups: memberships and rounds edited inline on their group."""

from __future__ import annotations

from django.contrib import admin

from groups.models import Group, Membership, Round


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "payout_position", "joined_at", "left_at")
    raw_id_fields = ("user",)
    ordering = ("payout_position",)


class RoundInline(admin.TabularInline):
    model = Round
    extra = 0
    fields = ("number", "recipient", "due_date", "status", "completed_at")
    raw_id_fields = ("recipient",)
    ordering = ("number",)


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = (
        "id", "name", "status", "min_members", "max_members", "contribution_amount", "currency",
        "total_rounds", "contract_address", "activated_at", "completed_at",
    )
    list_filter = ("status", "currency", ("contract_address", admin.EmptyFieldListFilter))
    search_fields = ("name", "contract_address")
    date_hierarchy = "created_at"
    # Status moves only through the hourly job (SPEC §5), which writes the audit log.
    readonly_fields = ("status", "created_at", "activated_at", "completed_at")
    inlines = (MembershipInline, RoundInline)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("id", "group", "user", "payout_position", "joined_at", "left_at")
    list_filter = (("left_at", admin.EmptyFieldListFilter),)
    search_fields = ("group__name", "user__username")
    list_select_related = ("group", "user")
    raw_id_fields = ("group", "user")


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("id", "group", "number", "recipient", "due_date", "status", "completed_at")
    list_filter = ("status",)
    search_fields = ("group__name",)
    list_select_related = ("group", "recipient__user")
    raw_id_fields = ("group", "recipient")
