"""Admin: run history (read-only) and job locks with a forced clear (SPEC §1, §6)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

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

    list_display = ("id", "job", "trigger", "scheduled_for", "status", "skip_reason", "attempts",
                    "started_at", "duration_ms", "items_processed", "worker")
    list_filter = ("job", "status", "trigger", "skip_reason", "dry_run")
    search_fields = ("task_id", "worker", "error")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in JobRun._meta.fields]
    actions = ["clear_locks_of_selected_jobs"]
    change_list_template = "admin/scheduler_app/jobrun/change_list.html"

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
