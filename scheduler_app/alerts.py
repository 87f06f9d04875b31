"""Alerts: each missed time, broken schedule and failed run is logged, reported and sent once; recovery once (issue 9).

"Once" is a row: :class:`~scheduler_app.ops_models.JobAlert` has a unique
(job, kind, key), and only the process whose INSERT wins sends. So the
``check-schedules`` job, ``manage.py check_schedules`` from cron and any
number of both can run side by side.

* **missed** (key: the scheduled time) and **broken** (key: the reason) are
  logged as errors and reported to Sentry (``capture_message``) once;
* **failed** (key: the run id), for runs that failed in the last 24 h: the
  engine already logged them and Sentry already has their exception, so
  only the notification is sent;
* with ``ALERT_URLS`` set (comma-separated Apprise URLs), each of them is
  sent as a notification; when the job next succeeds (a SUCCEEDED run that
  started after the alert), or a broken schedule can be built again, one
  recovery message per job goes out and the alerts are marked recovered.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler_app.context import iso
from scheduler_app.models import JobRun
from scheduler_app.ops_models import JobAlert

logger = logging.getLogger("scheduler")

#: Failed runs older than this are not alerted (e.g. on first deploy).
FAILED_LOOKBACK = dt.timedelta(hours=24)


def notify(title: str, body: str) -> bool:
    """Send one notification to every ``ALERT_URLS`` URL through Apprise; False when unset or nothing was delivered."""
    urls = list(getattr(settings, "ALERT_URLS", []) or [])
    if not urls:
        return False
    import apprise

    sender = apprise.Apprise()
    for url in urls:
        sender.add(url)
    try:
        return bool(sender.notify(title=title, body=body))
    except Exception:  # a notifier must never break the check
        logger.exception("Could not send the alert %r", title)
        return False


def _report_to_sentry(message: str) -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - sentry-sdk is a requirement
        return
    if sentry_sdk.get_client().is_active():
        sentry_sdk.capture_message(message, level="error")


def _claim(job: str, kind: str, key: str, detail: str, now: dt.datetime) -> bool:
    """Insert the alert row; True for the one caller that inserted it."""
    try:
        with transaction.atomic():
            JobAlert.objects.create(job=job, kind=kind, key=key[:255], detail=detail, created_at=now)
    except IntegrityError:
        return False
    return True


def alert_problems(problems, now: dt.datetime | None = None) -> list[str]:
    """Alert each new missed or broken problem and failed run once, then send recoveries; return the lines alerted."""
    now = now or timezone.now()
    sent: list[str] = []
    for problem in problems:
        if problem.kind not in ("missed", "broken"):
            continue  # late and overrunning are shown (dashboard, metrics, check_schedules), not alerted
        key = iso(problem.scheduled_for) if problem.kind == "missed" else problem.why
        line = problem.line()
        if _claim(problem.job, problem.kind, key, line, now):
            logger.error("Job %s", line)
            _report_to_sentry(line)
            notify(f"Scheduler: {line}", line)
            sent.append(line)
    for run in JobRun.objects.filter(status=JobRun.Status.FAILED, finished_at__gte=now - FAILED_LOOKBACK).only(
            "pk", "job", "attempts", "finished_at"):
        line = f"{run.job} failed: run {run.pk} after {run.attempts} attempts at {iso(run.finished_at)}"
        if _claim(run.job, JobAlert.Kind.FAILED, str(run.pk), line, now):
            notify(f"Scheduler: {line}", line)
            sent.append(line)
    broken_now = {(p.job, p.why[:255]) for p in problems if p.kind == "broken"}  # keys are stored cut to 255
    sent.extend(_recoveries(now, broken_now))
    return sent


def _recoveries(now: dt.datetime, broken_now: set[tuple[str, str]]) -> list[str]:
    lines = []
    open_alerts = JobAlert.objects.filter(recovered_at__isnull=True)
    for job in sorted(set(open_alerts.values_list("job", flat=True))):
        alerts = list(open_alerts.filter(job=job))
        recovered = []
        first_alert = min(a.created_at for a in alerts)
        success = JobRun.objects.filter(job=job, status=JobRun.Status.SUCCEEDED, started_at__gte=first_alert).order_by(
            "started_at").first()
        for alert in alerts:
            if alert.kind == JobAlert.Kind.BROKEN:
                if (job, alert.key) not in broken_now:
                    recovered.append(alert)
            elif success is not None:
                recovered.append(alert)
        ids = [a.pk for a in recovered]
        if not ids or not JobAlert.objects.filter(pk__in=ids, recovered_at__isnull=True).update(recovered_at=now):
            continue
        how = "schedule fixed"
        if success is not None:
            how = f"run {success.pk} succeeded at {iso(success.finished_at or success.started_at)}"
        line = f"{job} recovered: {how} ({len(ids)} alert(s) closed)"
        logger.info("Job %s", line)
        notify(f"Scheduler: {line}", line)
        lines.append(line)
    return lines
