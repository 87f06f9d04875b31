"""sync_schedules, clear_lock and the log format (SPEC §1, §2, §6, §7)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from audit.models import AuditLog
from scheduler_app.jobs import get_spec
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db

SEED_JOBS = {
    "archive-audit-logs": ("audit.tasks.archive_audit_logs_task", ("0", "2", "*", "*", "*")),
    "send-contribution-summaries": ("contributions.tasks.send_contribution_summaries_task", ("0", "9", "*", "*", "1")),
    "update-group-statuses": ("contributions.tasks.update_group_statuses_task", ("0", "*", "*", "*", "*")),
}


def crontab_of(name: str) -> tuple[str, ...]:
    c = PeriodicTask.objects.get(name=name).crontab
    return (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week)


def test_sync_schedules_creates_the_three_jobs_with_their_crontabs():
    call_command("sync_schedules", stdout=StringIO())
    for name, (task, cron) in SEED_JOBS.items():
        periodic = PeriodicTask.objects.get(name=name)
        assert periodic.task == task and periodic.enabled
        assert crontab_of(name) == cron
        assert str(periodic.crontab.timezone) == "UTC"


def test_sync_schedules_is_idempotent_and_keeps_admin_edits():
    call_command("sync_schedules", stdout=StringIO())
    # an admin moves the archive to 04:30 and disables the summaries
    edited, _ = CrontabSchedule.objects.get_or_create(minute="30", hour="4", day_of_month="*", month_of_year="*",
                                                      day_of_week="*", timezone="UTC")
    PeriodicTask.objects.filter(name="archive-audit-logs").update(crontab=edited)
    PeriodicTask.objects.filter(name="send-contribution-summaries").update(enabled=False)
    count = PeriodicTask.objects.count()
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert PeriodicTask.objects.count() == count
    assert crontab_of("archive-audit-logs") == ("30", "4", "*", "*", "*")
    assert PeriodicTask.objects.get(name="send-contribution-summaries").enabled is False
    assert "archive-audit-logs: unchanged" in out.getvalue()


def test_sync_schedules_applies_an_environment_override(settings):
    call_command("sync_schedules", stdout=StringIO())
    settings.JOB_SCHEDULE_OVERRIDES = {"archive-audit-logs": "0 3 * * *"}
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert crontab_of("archive-audit-logs") == ("0", "3", "*", "*", "*")
    assert "applied from SCHEDULE_ARCHIVE_AUDIT_LOGS" in out.getvalue()
    assert crontab_of("update-group-statuses") == ("0", "*", "*", "*", "*")


def test_clear_lock_removes_a_stale_lock_and_writes_the_audit_log(job_redis):
    spec = get_spec("archive-audit-logs")
    job_redis.set(spec.lock_key, "archive-audit-logs:manual:deadbeef", px=600_000)
    out = StringIO()
    call_command("clear_lock", "archive-audit-logs", stdout=out)
    assert job_redis.get(spec.lock_key) is None
    assert "lock cleared (was held by archive-audit-logs:manual:deadbeef)" in out.getvalue()
    entry = AuditLog.objects.get(action="JOB_LOCK_CLEARED")
    assert entry.entity_type == "job" and entry.entity_id == "archive-audit-logs"
    assert "archive-audit-logs:manual:deadbeef" in entry.details


def test_clear_lock_show_only_reports(job_redis):
    spec = get_spec("update-group-statuses")
    job_redis.set(spec.lock_key, "update-group-statuses:manual:cafe", px=300_000)
    out = StringIO()
    call_command("clear_lock", "update-group-statuses", "--show", stdout=out)
    assert "held by task update-group-statuses:manual:cafe (queued) until " in out.getvalue()
    assert job_redis.get(spec.lock_key) == "update-group-statuses:manual:cafe"
    assert not AuditLog.objects.filter(action="JOB_LOCK_CLEARED").exists()


def test_json_log_format_is_one_object_per_line(job_redis, tmp_path):
    env = process_env(LOG_FORMAT="json")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    done = subprocess.run([sys.executable, "manage.py", "run_job", "test-noop", "--local"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.strip().splitlines()]
    start = "Starting job test-noop (trigger=manual, scheduled=-, lock=acquired, ttl=30s, attempt 1/3)"
    starts = [r for r in records if r["message"] == start]
    assert len(starts) == 1 and starts[0]["logger"] == "scheduler" and starts[0]["level"] == "INFO", records
    assert [r["message"] for r in records if re.fullmatch(r"Job test-noop succeeded in \d+ms: 1 items \(attempt 1/3\)",
                                                          r["message"])], records
