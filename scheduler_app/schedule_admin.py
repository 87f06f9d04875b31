"""Admin for schedules: django-celery-beat's periodic task and crontab pages, made safe to edit (SPEC §10).

Registered in place of django-celery-beat's own admin classes (whose look
they keep):

* the crontab form rejects what Celery cannot run or what never fires,
  naming the field, the value and what is allowed;
* both change forms show the next 5 scheduled times, in ``TIME_ZONE`` and UTC;
* enable, disable and toggle save each task (so each change is audited and
  re-enabling never runs a time that passed while it was off), and "Pause" /
  "Resume" take a reason and an optional end;
* every save and delete runs as the admin user (:func:`acting_as`), so the
  audit log says who changed what.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_beat.admin import ClockedScheduleAdmin as BeatClockedScheduleAdmin
from django_celery_beat.admin import CrontabScheduleAdmin as BeatCrontabScheduleAdmin
from django_celery_beat.admin import IntervalScheduleAdmin as BeatIntervalScheduleAdmin
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.admin import PeriodicTaskForm as BeatPeriodicTaskForm
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask

from scheduler_app import schedule_services
from scheduler_app.schedules import CRONTAB_FIELDS, next_fire_times, validate_crontab_fields

admin.site.unregister(PeriodicTask)
admin.site.unregister(CrontabSchedule)
admin.site.unregister(IntervalSchedule)
admin.site.unregister(ClockedSchedule)


def _actor(request: HttpRequest) -> str:
    return f"admin user {request.user.get_username()}"


class SavedAsAdminUser(admin.ModelAdmin):
    """Saves and deletes run as the admin user (:func:`schedule_services.acting_as`), so the audit log names them."""

    def save_model(self, request, obj, form, change):
        with schedule_services.acting_as(_actor(request), request.user):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with schedule_services.acting_as(_actor(request), request.user):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with schedule_services.acting_as(_actor(request), request.user):
            for obj in queryset:  # one by one, so each delete is audited
                obj.delete()


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(SavedAsAdminUser, BeatIntervalScheduleAdmin):
    """Interval schedules; edits audited as the admin user."""


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(SavedAsAdminUser, BeatClockedScheduleAdmin):
    """Clocked (one-off) schedules; edits audited as the admin user."""


def _times_html(lines: list[str]):
    return format_html("<ol style='margin:0;padding-left:1.2em'>{}</ol>",
                       format_html_join("", "<li>{}</li>", ((line,) for line in lines)))


class CrontabScheduleForm(forms.ModelForm):
    """The crontab form, checked field by field and for ever firing (module docstring)."""

    class Meta:
        model = CrontabSchedule
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone")

    def clean(self):
        data = super().clean() or {}
        values = [str(data.get(name) or "") for name, _ in CRONTAB_FIELDS]
        if "" in values:
            return data
        try:
            validate_crontab_fields(*values, tz=data.get("timezone") or dt.UTC)
        except ValueError as exc:
            message = str(exc)
            field = message.split(" ", 1)[0]
            if field in dict(CRONTAB_FIELDS):
                self.add_error(field, message)
            else:
                raise forms.ValidationError(message) from None
        return data


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(SavedAsAdminUser, BeatCrontabScheduleAdmin):
    """Crontabs: validated, with their next 5 times; edits audited as the admin user."""

    form = CrontabScheduleForm
    fields = ("human_readable", "minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone",
              "next_scheduled_times")
    readonly_fields = ("human_readable", "next_scheduled_times")

    @admin.display(description="Next 5 scheduled times")
    def next_scheduled_times(self, obj: CrontabSchedule | None):
        if obj is None or obj.pk is None:
            return "-"
        try:
            cron = validate_crontab_fields(obj.minute, obj.hour, obj.day_of_month, obj.month_of_year,
                                           obj.day_of_week, tz=obj.timezone)
        except ValueError as exc:
            return f"none: {exc}"
        cron.tz = obj.timezone
        zone = timezone.get_default_timezone()
        return _times_html([f"{t.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} ({t:%Y-%m-%d %H:%M:%S} UTC)"
                            for t in next_fire_times(cron, timezone.now(), 5)])



class PauseForm(forms.Form):
    """Why, and optionally until when (in ``TIME_ZONE``), to pause the selected tasks."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                             help_text="Written to the audit log.")
    until = forms.DateTimeField(required=False,
                                help_text="Resume by itself at this time (TIME_ZONE); empty: until resumed.")

    def clean_until(self):
        until = self.cleaned_data.get("until")
        if until is not None and until <= timezone.now():
            raise forms.ValidationError(f"{until:%Y-%m-%d %H:%M} is in the past: give a later time, or none")
        if until is not None and until.year > 9000:
            raise forms.ValidationError(f"{until:%Y-%m-%d %H:%M} is too far: give a time before the year 9000, or none")
        return until


def registered_task_names() -> set[str]:
    """Every task the workers can run: the registry's jobs and every other registered Celery task."""
    from celery import current_app

    from scheduler_app.registry import load_registry

    current_app.loader.import_default_modules()  # what the workers import (CELERY_IMPORTS, autodiscovery)
    return {spec.task_name for spec in load_registry().values()} | set(current_app.tasks)


class PeriodicTaskForm(BeatPeriodicTaskForm):
    """django-celery-beat's form, refusing a task no worker runs and a one-off time already past.

    Its "Task (custom)" box takes any text: ``os.system`` would be saved and
    then fail at every firing with "Received unregistered task".
    """

    def clean(self):
        data = super().clean()
        task = data.get("task")
        if task and task not in registered_task_names():
            self.add_error("task", forms.ValidationError(
                "%(task)s is not a registered job or Celery task: pick one from \"Task (registered)\"",
                code="unregistered_task", params={"task": repr(task)}))
        clocked = data.get("clocked")
        # Only a new task, or one moved to another clocked time: an old one-off that ran keeps its past time.
        if clocked is not None and (self.instance.pk is None or "clocked" in self.changed_data) \
                and clocked.clocked_time <= timezone.now():
            zone = timezone.get_default_timezone()
            self.add_error("clocked", forms.ValidationError(
                "%(when)s has passed: a one-off task needs a clocked time in the future",
                code="clocked_in_past",
                params={"when": f"{clocked.clocked_time.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}"}))
        return data


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(SavedAsAdminUser, BeatPeriodicTaskAdmin):
    """Periodic tasks with their next times and pauses; every change audited as the admin user."""

    form = PeriodicTaskForm

    list_display = ("name", "enabled", "pause_state", "scheduler", "next_scheduled_time", "last_run_at", "one_off")
    actions = ("enable_tasks", "disable_tasks", "toggle_tasks", "pause_tasks", "resume_tasks", "run_tasks")
    readonly_fields = ("last_run_at", "crontab_translation", "next_scheduled_times", "pause_state")
    fieldsets = (
        (None, {"fields": ("name", "regtask", "task", "enabled", "pause_state", "description"),
                "classes": ("extrapretty", "wide")}),
        ("Schedule", {"fields": ("interval", "crontab", "crontab_translation", "solar", "clocked", "start_time",
                                 "last_run_at", "one_off", "next_scheduled_times"),
                      "classes": ("extrapretty", "wide")}),
        *BeatPeriodicTaskAdmin.fieldsets[2:],
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("pause")

    def get_actions(self, request):
        # Every action changes a schedule or starts a run: a viewer gets none of them.
        actions = super().get_actions(request)
        if not self.has_change_permission(request):
            for name in ("enable_tasks", "disable_tasks", "toggle_tasks", "pause_tasks", "resume_tasks"):
                actions.pop(name, None)
        if not request.user.has_perm("scheduler_app.run_job"):
            actions.pop("run_tasks", None)
        return actions

    def crontab_translation(self, obj):
        return obj.crontab.human_readable if obj and obj.crontab else "-"

    @admin.display(description="Paused")
    def pause_state(self, obj: PeriodicTask | None) -> str:
        pause = getattr(obj, "pause", None) if obj is not None and obj.pk else None
        if pause is None:
            return "-"
        until = (f" until {pause.until.astimezone(timezone.get_default_timezone()):%Y-%m-%d %H:%M %Z}"
                 if pause.until else "")
        return f"paused by {pause.paused_by}{until}: {pause.reason}"

    @admin.display(description="Next run")
    def next_scheduled_time(self, obj: PeriodicTask) -> str:
        if not obj.enabled:
            return "-"
        return schedule_services.describe_next_times(obj, 1)[0]

    @admin.display(description="Next 5 scheduled times")
    def next_scheduled_times(self, obj: PeriodicTask | None):
        if obj is None or obj.pk is None:
            return "-"
        lines = schedule_services.describe_next_times(obj, 5)
        if not obj.enabled:
            lines = ["(disabled: none of these runs until it is enabled)", *lines]
        return _times_html(lines)

    # -- actions --------------------------------------------------------------------

    @admin.action(description="Enable selected tasks (from now on)")
    def enable_tasks(self, request, queryset):
        changed = schedule_services.set_enabled(queryset, True, actor=_actor(request), user=request.user)
        self.message_user(request, f"{changed} task(s) enabled; they run the scheduled times from now on.")

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request, queryset):
        changed = schedule_services.set_enabled(queryset, False, actor=_actor(request), user=request.user)
        self.message_user(request, f"{changed} task(s) disabled.")

    @admin.action(description="Toggle activity of selected tasks")
    def toggle_tasks(self, request, queryset):
        changed = 0
        for task in queryset:
            changed += schedule_services.set_enabled([task], not task.enabled, actor=_actor(request), user=request.user)
        self.message_user(request, f"{changed} task(s) toggled; enabled ones run the scheduled times from now on.")

    @admin.action(description="Pause selected tasks (with a reason)")
    def pause_tasks(self, request, queryset):
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for task in queryset:
                schedule_services.pause(task, reason=form.cleaned_data["reason"], until=form.cleaned_data["until"],
                                        actor=_actor(request), user=request.user)
            self.message_user(request, f"{queryset.count()} task(s) paused.")
            return None
        context = {**self.admin_site.each_context(request), "title": "Pause periodic tasks", "form": form,
                   "tasks": list(queryset), "opts": self.model._meta}
        return TemplateResponse(request, "admin/scheduler_app/pause_tasks.html", context)

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request, queryset):
        """Run each selected job now and report the real outcome (started, queued, skipped with the holder, not sent).

        A disabled or paused task is run only after a confirmation page. Tasks
        that are not jobs (e.g. ``celery.backend_cleanup``) are sent as django-celery-beat sends them.
        """
        from scheduler_app.dashboard import report_outcome
        from scheduler_app.registry import load_registry
        from scheduler_app.run_now import run_now

        by_task = {spec.task_name: spec for spec in load_registry().values()}
        tasks = list(queryset)
        disabled = [t for t in tasks if not t.enabled]
        if disabled and request.POST.get("confirm") != "yes":
            context = {**self.admin_site.each_context(request), "title": "Run disabled tasks now?",
                       "tasks": disabled, "selected": [t.pk for t in tasks], "action_url": "", "opts": self.model._meta}
            return TemplateResponse(request, "admin/scheduler_app/confirm_run.html", context)
        others = [t.pk for t in tasks if t.task not in by_task]
        if others:
            super().run_tasks(request, queryset.filter(pk__in=others))
        for task in tasks:
            if task.task in by_task:
                report_outcome(request, run_now(by_task[task.task], sender=_actor(request)))
        return None

    @admin.action(description="Resume selected tasks (from now on)")
    def resume_tasks(self, request, queryset):
        resumed = sum(schedule_services.resume(task, actor=_actor(request), user=request.user) for task in queryset)
        self.message_user(request, f"{resumed} task(s) resumed; they run the scheduled times from now on.",
                          messages.SUCCESS if resumed else messages.INFO)
