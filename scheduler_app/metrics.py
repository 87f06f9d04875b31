"""``/metrics``: Prometheus text format, computed from the database at scrape time (SPEC §9, issue 9).

A custom collector (:class:`JobCollector`) reads the run history, the
schedules and the locks on every scrape, so nothing has to stay up between
scrapes and every web process answers the same. Access: the header
``Authorization: Bearer <METRICS_TOKEN>`` (compared with
:func:`hmac.compare_digest`) or a logged-in staff session; 401 otherwise.
Labels are job names, statuses and triggers only: no personal data.

``scheduler_job_runs_total`` counts the rows in the history, so it drops when
``prune-job-runs`` deletes old rows; Prometheus's ``rate()`` and
``increase()`` treat that as a counter reset.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from scheduler_app.models import JobRun
from scheduler_app.ops_models import BeatHeartbeat
from scheduler_app.registry import load_registry

logger = logging.getLogger("scheduler")


class JobCollector:
    """Collects the scheduler's metrics from the database (and the locks from Redis) when scraped."""

    def collect(self):
        from scheduler_app.problems import KINDS, find_problems, job_tasks
        from scheduler_app.schedule_services import next_times

        now = timezone.now()
        jobs = sorted(load_registry())

        runs = CounterMetricFamily("scheduler_job_runs", "Job runs in the history, by outcome and trigger.",
                                   labels=["job", "status", "trigger"])
        for row in JobRun.objects.values("job", "status", "trigger").annotate(n=Count("id")).order_by(
                "job", "status", "trigger"):
            runs.add_metric([row["job"], row["status"], row["trigger"]], row["n"])
        yield runs

        last_success = GaugeMetricFamily("scheduler_job_last_success_timestamp_seconds",
                                         "Unix time the job's last successful run finished.", labels=["job"])
        for job, finished in JobRun.objects.filter(status=JobRun.Status.SUCCEEDED).values("job").annotate(
                last=Max("finished_at")).order_by("job").values_list("job", "last"):
            if finished is not None:
                last_success.add_metric([job], finished.timestamp())
        yield last_success

        duration = GaugeMetricFamily("scheduler_job_last_duration_seconds",
                                     "Duration of the job's last finished run.", labels=["job"])
        items = GaugeMetricFamily("scheduler_job_last_items", "Items processed by the job's last finished run.",
                                  labels=["job"])
        running = GaugeMetricFamily("scheduler_job_running", "Runs of the job in state RUNNING.", labels=["job"])
        for job in jobs:
            last = JobRun.objects.filter(job=job, status__in=[JobRun.Status.SUCCEEDED, JobRun.Status.FAILED]).order_by(
                "-started_at", "-id").values("duration_ms", "items_processed").first()
            if last is not None and last["duration_ms"] is not None:
                duration.add_metric([job], last["duration_ms"] / 1000)
                items.add_metric([job], last["items_processed"] or 0)
            running.add_metric([job], JobRun.objects.filter(job=job, status=JobRun.Status.RUNNING).count())
        yield duration
        yield items
        yield running

        next_scheduled = GaugeMetricFamily("scheduler_job_next_scheduled_timestamp_seconds",
                                           "Unix time of the job's next scheduled time (enabled schedules only).",
                                           labels=["job"])
        enabled = GaugeMetricFamily("scheduler_job_enabled", "1 when the job's schedule is enabled, 0 when paused "
                                    "or disabled.", labels=["job"])
        for task, spec in job_tasks():
            enabled.add_metric([spec.name], 1 if task.enabled else 0)
            if not task.enabled:
                continue
            try:
                upcoming = next_times(task, 1, after=now)
            except (TypeError, ValueError):
                continue
            if upcoming:
                next_scheduled.add_metric([spec.name], upcoming[0].timestamp())
        yield next_scheduled
        yield enabled

        counts = {kind: dict.fromkeys(jobs, 0) for kind in KINDS}
        for problem in find_problems(now):
            counts[problem.kind][problem.job] = counts[problem.kind].get(problem.job, 0) + 1
        for kind, help_text in (("missed", "Scheduled times in the last 24 h with no run, the grace past."),
                                ("late", "Runs in the last 24 h that started later than the grace."),
                                ("overrunning", "Running runs past the job's expected duration."),
                                ("lost", "Running runs whose heartbeat stopped 3 periods ago (their process died)."),
                                ("broken", "1 when the job's schedule cannot be built.")):
            family = GaugeMetricFamily(f"scheduler_job_{kind}_runs" if kind != "broken" else "scheduler_job_broken",
                                       help_text, labels=["job"])
            for job, n in sorted(counts[kind].items()):
                family.add_metric([job], n)
            yield family

        lock = GaugeMetricFamily("scheduler_job_lock_held", "1 while a run holds the job's lock.", labels=["job"])
        try:
            from scheduler_app.locks import default_backend

            backend = default_backend()
            for job, spec in sorted(load_registry().items()):
                lock.add_metric([job], 1 if backend.holder(spec.lock_key) is not None else 0)
            yield lock
        except Exception as exc:  # Redis down: the other metrics still count
            logger.warning("Metrics: could not read the job locks (%s)", type(exc).__name__)

        beat = GaugeMetricFamily("scheduler_beat_last_heartbeat_timestamp_seconds",
                                 "Unix time of the latest beat heartbeat.")
        latest = BeatHeartbeat.objects.aggregate(last=Max("seen_at"))["last"]
        if latest is not None:
            beat.add_metric([], latest.timestamp())
        yield beat


def _authorised(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        if hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode()):
            return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition of :class:`JobCollector`; 401 without the bearer token or a staff session."""
    if not _authorised(request):
        response = HttpResponse("401 Unauthorized: send Authorization: Bearer <METRICS_TOKEN> or log in as staff\n",
                                status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
