"""Admin: run history (read-only) and job locks with a forced clear (SPEC §1, §6)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from scheduler_app import schedule_admin  # noqa: F401 - registers the schedule pages
from scheduler_app.admin_base import ReadOnlyAdmin
from scheduler_app.lock_services import HolderAlive, all_lock_statuses, clear_job_lock
from scheduler_app.models import JobRun
from scheduler_app.registry import get_spec

#: Who may see the Job locks page (holders and task ids) and who may clear a lock (JobRun.Meta.permissions).
VIEW_LOCKS, CLEAR_LOCK = "scheduler_app.view_locks", "scheduler_app.clear_lock"


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    """Read-only run history, newest first; the "Job locks" page shows and clears locks."""

    # Fits 1400 px without scrolling: the outcome as one badge (with skip reason and dry run), times with seconds.
    list_display = ("id", "job", "status_badge", "started", "duration", "items", "attempts", "scheduled",
                    "worker_short")
    list_display_links = ("id", "job")
    list_filter = ("job", "status", "trigger", "skip_reason", "dry_run")
    search_fields = ("task_id", "worker", "error")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in JobRun._meta.fields]
    actions = ["clear_locks_of_selected_jobs"]
    change_list_template = "admin/scheduler_app/jobrun/change_list.html"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, run: JobRun):
        colour = {"SUCCEEDED": "#2e7d32", "FAILED": "#c62828", "RUNNING": "#1565c0", "SKIPPED": "#757575"}
        extra = f" ({run.get_skip_reason_display()})" if run.skip_reason else ""
        dry = format_html(' <span style="{}">DRY RUN</span>',
                          "border:1px solid #ef6c00;color:#ef6c00;border-radius:6px;"
                          "padding:0 4px;font-size:10px") if run.dry_run else ""
        return format_html('<span class="badge" style="background:{};color:#fff;border-radius:8px;padding:1px 6px;'
                           'font-size:11px;font-weight:bold;white-space:nowrap">{}{}</span>{}',
                           colour.get(run.status, "#666"), run.status, extra, dry)

    @admin.display(description="Trigger, scheduled (UTC)", ordering="scheduled_for")
    def scheduled(self, run: JobRun) -> str:
        when = f"{run.scheduled_for:%Y-%m-%d %H:%M:%S}" if run.scheduled_for else ""
        return f"{run.trigger} {when}".strip()

    @admin.display(description="Started (UTC)", ordering="started_at")
    def started(self, run: JobRun):
        return format_html('<span style="white-space:nowrap">{}</span>', f"{run.started_at:%Y-%m-%d %H:%M:%S}")

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, run: JobRun) -> str:
        if run.duration_ms is None:
            return "running" if run.status == JobRun.Status.RUNNING else "-"
        return f"{run.duration_ms / 1000:.3f} s"

    @admin.display(description="Items", ordering="items_processed")
    def items(self, run: JobRun) -> str:
        if run.status == JobRun.Status.RUNNING:
            so_far = "-" if run.items_processed is None else run.items_processed
            return f"{so_far} so far" + (f" ({run.progress})" if run.progress else "")
        return "-" if run.items_processed is None else str(run.items_processed)

    @admin.display(description="Worker / sender", ordering="worker")
    def worker_short(self, run: JobRun):
        return format_html('<span title="{}">{}</span>', run.worker, run.worker[:24])

    def get_urls(self):
        urls = super().get_urls()
        custom = [path("locks/", self.admin_site.admin_view(self.locks_view), name="scheduler_app_jobrun_locks")]
        return custom + urls

    def locks_view(self, request: HttpRequest):
        """List each job's lock holder and expiry; POST ``job=NAME`` clears that lock.

        Seeing the page needs the ``view_locks`` permission (403 otherwise), clearing ``clear_lock``.
        """
        if not request.user.has_perm(VIEW_LOCKS):
            raise PermissionDenied
        if request.method == "POST":
            if not request.user.has_perm(CLEAR_LOCK):
                messages.error(request, "You do not have permission to clear locks.")
            else:
                name = request.POST.get("job", "")
                try:
                    spec = get_spec(name)
                except KeyError as exc:
                    messages.error(request, exc.args[0])
                else:
                    try:
                        holder = clear_job_lock(spec, actor=f"admin user {request.user.get_username()}",
                                                user=request.user, force=request.POST.get("force") == "1")
                    except HolderAlive as alive:
                        messages.error(request, f"Not cleared: {alive}. It releases the lock when it ends; "
                                                "tick 'even if running' to clear it anyway.")
                        return HttpResponseRedirect(reverse("admin:scheduler_app_jobrun_locks"))
                    if holder:
                        messages.success(request, f"Cleared the lock of {name} (held by {holder.token}).")
                    else:
                        messages.info(request, f"The lock of {name} was already free.")
            return HttpResponseRedirect(reverse("admin:scheduler_app_jobrun_locks"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Job locks",
            "statuses": all_lock_statuses(),
            "opts": self.model._meta,
            "can_clear": request.user.has_perm(CLEAR_LOCK),
        }
        return TemplateResponse(request, "admin/scheduler_app/locks.html", context)

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        if not request.user.has_perm(CLEAR_LOCK):
            actions.pop("clear_locks_of_selected_jobs", None)
        return actions

    @admin.action(description="Clear the locks of the selected runs' jobs")
    def clear_locks_of_selected_jobs(self, request: HttpRequest, queryset):
        if not request.user.has_perm(CLEAR_LOCK):
            self.message_user(request, "You do not have permission to clear locks.", messages.ERROR)
            return
        for name in sorted(set(queryset.values_list("job", flat=True))):
            try:
                spec = get_spec(name)
            except KeyError:
                continue
            try:
                holder = clear_job_lock(spec, actor=f"admin user {request.user.get_username()}", user=request.user)
            except HolderAlive as alive:
                self.message_user(request, f"{name}: not cleared: {alive}.", messages.ERROR)
                continue
            if holder:
                self.message_user(request, f"Cleared the lock of {name} (held by {holder.token}).", messages.SUCCESS)
            else:
                self.message_user(request, f"The lock of {name} was already free.", messages.INFO)
