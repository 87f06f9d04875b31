"""The "Scheduled jobs" admin page (issue 9): every job at a glance, and **Run now**.

For each job: its schedule in words (cron-descriptor) and time zone,
enabled or paused (with the reason), the next 5 scheduled times, the last
run, success rate and p50/p95 duration over its last 30 finished runs, a
chart of those runs (a small SVG drawn here: no JavaScript, no CDN), the
lock's holder (linked to its run) and expiry, the missed / late /
overrunning / broken flags of :mod:`scheduler_app.problems`, and links to
its filtered history. Needs the ``scheduler_app.view_dashboard``
permission; **Run now** needs ``scheduler_app.run_job``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from scheduler_app.lock_services import lock_status
from scheduler_app.models import JobRun, SchedulePause
from scheduler_app.problems import find_problems, job_tasks, percentile
from scheduler_app.registry import get_spec, load_registry
from scheduler_app.run_now import run_now
from scheduler_app.schedule_services import next_times

VIEW_PERMISSION = "scheduler_app.view_dashboard"
RUN_PERMISSION = "scheduler_app.run_job"
RECENT = 30
COLOURS = {"SUCCEEDED": "#2e7d32", "FAILED": "#c62828", "RUNNING": "#1565c0", "SKIPPED": "#9e9e9e"}


def schedule_in_words(task) -> tuple[str, str]:
    """``("At 09:00, only on Monday", "Europe/Berlin")`` for a task's schedule."""
    from cron_descriptor import ExpressionDescriptor

    if task is None:
        return "no schedule", "-"
    if task.crontab is not None:
        c = task.crontab
        expression = f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"
        try:
            words = ExpressionDescriptor(expression, use_24hour_time_format=True).get_description()
        except Exception:  # cron-descriptor's FormatException on what Celery accepts and it does not
            words = expression
        return f"{words} ({expression})", str(c.timezone)
    if task.interval is not None:
        return f"Every {task.interval.every} {task.interval.period}", "UTC (aligned to the epoch)"
    if task.clocked is not None:
        return f"Once at {task.clocked.clocked_time:%Y-%m-%d %H:%M:%S} UTC", "UTC"
    if task.solar is not None:  # str(task.schedule) needs the ephem package
        return f"Solar: {task.solar.event} at ({task.solar.latitude}, {task.solar.longitude})", "-"
    return "-", "-"


def runs_chart(runs: list[JobRun]):
    """An inline SVG bar chart of ``runs`` (oldest left): height = duration, colour = outcome, a tooltip per bar."""
    width, height, bar = 240, 36, 8
    longest = max([r.duration_ms or 0 for r in runs] + [1])
    bars = []
    for i, run in enumerate(reversed(runs)):
        ms = run.duration_ms or 0
        h = max(round(ms / longest * (height - 2)), 2)
        label = f"run {run.pk}: {run.status}, {ms} ms, {run.started_at:%Y-%m-%d %H:%M:%S} UTC"
        bars.append((i * bar, height - h, bar - 2, h, COLOURS.get(run.status, "#666"), label))
    return format_html(
        '<svg class="runs-chart" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        width, height, width, height, f"last {len(runs)} runs",
        format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', bars))


@dataclasses.dataclass
class JobRow:
    name: str
    description: str
    task: object
    schedule: str
    zone: str
    state: str
    next_times: list[str]
    last: JobRun | None
    success_rate: str
    p50: str
    p95: str
    chart: str
    lock: object
    holder_run: JobRun | None
    flags: dict
    problems: list[str]


def _next_times(task) -> list[str]:
    """The next 5 scheduled times in ``TIME_ZONE``, short: ``Mon 2026-11-30 09:00 CET``; or why there are none."""
    zone = timezone.get_default_timezone()
    try:
        times = next_times(task, 5)
    except (TypeError, ValueError) as exc:
        return [f"none: {exc}"]
    return [f"{t.astimezone(zone):%a %Y-%m-%d %H:%M %Z}" for t in times] or ["none in the next 5 years"]


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def job_rows(now: dt.datetime | None = None) -> list[JobRow]:
    now = now or timezone.now()
    problems = find_problems(now)
    tasks = {spec.name: task for task, spec in job_tasks()}
    pauses = {p.periodic_task_id: p for p in SchedulePause.objects.all()}
    rows = []
    for name, spec in sorted(load_registry().items()):
        task = tasks.get(name)
        recent = list(JobRun.objects.filter(job=name).exclude(status=JobRun.Status.SKIPPED).order_by(
            "-started_at", "-id")[:RECENT])
        finished = [r for r in recent if r.status in (JobRun.Status.SUCCEEDED, JobRun.Status.FAILED)]
        ok = [r.duration_ms for r in finished if r.status == JobRun.Status.SUCCEEDED and r.duration_ms is not None]
        if task is None:
            state = "no schedule (run sync_schedules)"
        elif task.enabled:
            state = "enabled"
        elif task.pk in pauses:
            pause = pauses[task.pk]
            until = f" until {pause.until:%Y-%m-%d %H:%M} UTC" if pause.until else ""
            state = f"paused by {pause.paused_by}{until}: {pause.reason}"
        else:
            state = "disabled"
        try:
            lock = lock_status(spec)
        except Exception:  # Redis down: the page still shows the rest
            lock = None
        holder_run = (JobRun.objects.filter(task_id=lock.holder.token).first()
                      if lock is not None and lock.holder is not None else None)
        mine = [p for p in problems if p.job == name]
        flags = {kind: sum(1 for p in mine if p.kind == kind) for kind in ("missed", "late", "overrunning", "lost",
                                                                            "broken")}
        schedule, zone = schedule_in_words(task)
        rows.append(JobRow(
            name=name, description=spec.description, task=task, schedule=schedule, zone=zone, state=state,
            next_times=_next_times(task) if task is not None and task.enabled else [],
            last=recent[0] if recent else None,
            success_rate=(f"{100 * len(ok) / len(finished):.0f}% of {len(finished)}" if finished else "-"),
            p50=_seconds(percentile(ok, 0.5)), p95=_seconds(percentile(ok, 0.95)),
            chart=runs_chart(recent) if recent else "", lock=lock, holder_run=holder_run, flags=flags,
            problems=[p.line() for p in mine][:10],
        ))
    return rows


def dashboard_view(request: HttpRequest):
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Scheduled jobs",
        "rows": job_rows(),
        "can_run": request.user.has_perm(RUN_PERMISSION),
        "runs_url": reverse("admin:scheduler_app_jobrun_changelist"),
        "now": timezone.now(),
    }
    return TemplateResponse(request, "admin/scheduler_app/dashboard.html", context)


def report_outcome(request: HttpRequest, outcome) -> None:
    """Show a :class:`~scheduler_app.run_now.RunNowOutcome` as an admin message: a skip is a warning, never success."""
    if outcome.run_id is not None:
        url = reverse("admin:scheduler_app_jobrun_change", args=[outcome.run_id])
        text = format_html('{} (<a href="{}">run {}</a>)', outcome.message, url, outcome.run_id)
    else:
        text = outcome.message
    level = {"started": messages.SUCCESS, "queued": messages.INFO, "skipped": messages.WARNING}.get(
        outcome.status, messages.ERROR)
    messages.add_message(request, level, text)


@require_POST
def run_now_view(request: HttpRequest):
    if not (request.user.has_perm(VIEW_PERMISSION) and request.user.has_perm(RUN_PERMISSION)):
        raise PermissionDenied
    name = request.POST.get("job", "")
    try:
        spec = get_spec(name)
    except KeyError as exc:
        messages.error(request, exc.args[0])
        return HttpResponseRedirect(reverse("scheduler-dashboard"))
    task = dict((s.name, t) for t, s in job_tasks()).get(name)
    if task is not None and not task.enabled and request.POST.get("confirm") != "yes":
        context = {**admin.site.each_context(request), "title": f"Run {name} now?", "tasks": [task],
                   "action_url": reverse("scheduler-dashboard-run"), "job": name}
        return TemplateResponse(request, "admin/scheduler_app/confirm_run.html", context)
    report_outcome(request, run_now(spec, sender=f"admin user {request.user.get_username()}"))
    return HttpResponseRedirect(reverse("scheduler-dashboard"))
