"""Alerts once through Apprise (a json:// notifier to a local HTTP server), with recovery; retention (issue 9)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.test import override_settings
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from scheduler_app.ops_models import JobAlert
from scheduler_app.problems import check_schedules
from scheduler_app.retention import prune_job_runs

pytestmark = pytest.mark.django_db
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def notifier():
    """A local HTTP endpoint for Apprise's ``json://`` notifier; ``.messages`` holds what it received."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.messages = received  # type: ignore[attr-defined]
    server.url = f"json://127.0.0.1:{server.server_address[1]}/alerts"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def run(*, started: str, status="SUCCEEDED", scheduled: str | None = None) -> JobRun:
    return JobRun.objects.create(job="test-noop", trigger="beat" if scheduled else "manual",
                                 scheduled_for=at(scheduled) if scheduled else None, status=status, attempts=3,
                                 started_at=at(started), finished_at=at(started) + dt.timedelta(seconds=1),
                                 duration_ms=1000, task_id=uuid.uuid4().hex)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_missed_and_failed_are_alerted_once_then_one_recovery(notifier):
    with time_machine.travel(at("2026-11-30T00:30:00"), tick=False):
        cron = CrontabSchedule.objects.create(minute="0", hour="*", day_of_month="*", month_of_year="*",
                                              day_of_week="*", timezone="UTC")
        PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, crontab=cron)
    failed = run(started="2026-11-30T01:00:00", status="FAILED", scheduled="2026-11-30T01:00:00")
    caplog = Records()
    logging.getLogger("scheduler").addHandler(caplog)
    with override_settings(ALERT_URLS=[notifier.url]):
        # when the check runs at 02:10: 02:00 is missed, 01:00's run failed
        check_schedules(at("2026-11-30T02:10:00"))
        # then one alert each, and one error log line for the missed time
        bodies = [m["message"] for m in notifier.messages]
        assert bodies == ["test-noop missed 2026-11-30T02:00:00Z",
                          f"test-noop failed: run {failed.pk} after 3 attempts at 2026-11-30T01:00:01Z"]
        assert [r.getMessage() for r in caplog.records] == ["Job test-noop missed 2026-11-30T02:00:00Z"]
        # when it runs again (another process, cron): nothing new
        check_schedules(at("2026-11-30T02:20:00"))
        assert len(notifier.messages) == 2
        assert JobAlert.objects.count() == 2
        # when the job next succeeds: one recovery message, once
        run(started="2026-11-30T02:30:00")
        check_schedules(at("2026-11-30T02:31:00"))
        check_schedules(at("2026-11-30T02:32:00"))
        assert [m["message"] for m in notifier.messages[2:]] == [
            "test-noop recovered: run 3 succeeded at 2026-11-30T02:30:01Z (2 alert(s) closed)".replace(
                "run 3", f"run {JobRun.objects.filter(status='SUCCEEDED').get().pk}")]
        assert notifier.messages[0]["title"] == "Scheduler: test-noop missed 2026-11-30T02:00:00Z"
    logging.getLogger("scheduler").removeHandler(caplog)


def test_no_alert_without_alert_urls(notifier):
    with override_settings(ALERT_URLS=[]):
        run(started="2026-11-30T01:00:00", status="FAILED")
        with time_machine.travel(at("2026-11-30T01:10:00"), tick=False):
            check_schedules()
    assert notifier.messages == []
    assert JobAlert.objects.count() == 1  # still recorded: a later ALERT_URLS does not replay old problems


def test_prune_job_runs_in_batches_keeps_recent_and_running():
    now = at("2026-11-30T12:00:00")
    for day in (100, 95, 91):
        run(started=(now - dt.timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S"))
    edge = run(started="2026-09-01T12:00:00")  # exactly 90 days: kept
    stuck = run(started="2026-06-01T12:00:00", status="RUNNING")
    recent = run(started="2026-11-29T12:00:00")
    assert prune_job_runs(days=90, now=now, dry_run=True) == 3
    assert prune_job_runs(days=90, now=now, batch_size=2) == 3
    assert set(JobRun.objects.values_list("pk", flat=True)) == {edge.pk, stuck.pk, recent.pk}
    assert prune_job_runs(days=90, now=now) == 0
