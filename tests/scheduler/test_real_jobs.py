"""The three jobs of SPEC §3 on demo data, through real worker and beat processes.

Each runs from ``run_job`` (sent to the worker, waited for) and from its
beat schedule (switched to a 1 s interval), with its ``JobRun`` rows and the
log lines of SPEC §7.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from audit.models import ArchivedAuditLog, AuditLog
from contributions.models import SummaryDelivery
from scheduler_app.jobs import iso
from scheduler_app.models import JobRun
from tests.processes import ROOT, drain_worker, process_env, start_beat, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = ("archive-audit-logs", "send-contribution-summaries", "update-group-statuses")


@pytest.fixture
def demo_data():
    call_command("seed_demo_data", groups=12, audit_logs=3000, seed=7, stdout=StringIO())


def run_job(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "run_job", name], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=180)


def test_run_job_runs_each_job_through_the_worker(worker, job_redis, demo_data):
    # given demo data: logs older than the 90-day cut-off, summaries not yet sent
    cutoff = timezone.now() - dt.timedelta(days=90)
    old_ids = set(AuditLog.objects.filter(created_at__lt=cutoff).values_list("id", flat=True))
    assert 500 < len(old_ids) < 2500
    log_start = len(worker.log())
    # when each job is run by hand through the worker
    results = {name: run_job(name) for name in JOBS}
    # then each exits 0 with one manual SUCCEEDED run
    for name, done in results.items():
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        run = JobRun.objects.get(job=name)
        assert (run.trigger, run.status, run.attempts) == ("manual", "SUCCEEDED", 1)
    # and the archive moved exactly the old logs, keeping their ids
    assert JobRun.objects.get(job="archive-audit-logs").items_processed == len(old_ids)
    assert set(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == old_ids
    assert not AuditLog.objects.filter(created_at__lt=cutoff).exists()
    # and the summaries went out once per delivery row
    sent = JobRun.objects.get(job="send-contribution-summaries").items_processed
    assert sent == SummaryDelivery.objects.exclude(sent_at__isnull=True).count() > 0
    # and the status job changed as many groups as it wrote status-change audit logs
    statuses = JobRun.objects.get(job="update-group-statuses")
    changed = AuditLog.objects.filter(action="GROUP_STATUS_CHANGED", created_at__gte=statuses.started_at).count()
    assert statuses.items_processed == changed
    # and the worker logged each job's own line, with those numbers, between the scheduler's lines
    log = worker.log()[log_start:]
    assert f"[audit] Archived {len(old_ids)} audit logs older than 90 days" in log
    assert ("[scheduler] Job archive-audit-logs succeeded in " in log
            and f"ms: {len(old_ids)} items (attempt 1/3)" in log)
    assert f"[contributions] Sent {sent} contribution summaries for week " in log
    assert f"[groups] Updated {changed} group statuses (" in log
    assert "[scheduler] Job update-group-statuses succeeded in " in log and f"ms: {changed} items (attempt 1/3)" in log
    # no email addresses logged
    assert "@" not in "\n".join(line for line in log.splitlines() if "[contributions]" in line)


def test_beat_runs_each_job_from_its_schedule(worker, job_redis, demo_data):
    # given the three schedules, switched to a 1 s interval as an admin would
    call_command("sync_schedules", stdout=StringIO())
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    for name in JOBS:
        PeriodicTask.objects.filter(name=name).update(crontab=None, interval=every)
    log_start = len(worker.log())
    beat = start_beat("jobs")
    try:
        # when beat has been running until each job has a beat run that succeeded
        wait_for(lambda: all(JobRun.objects.filter(job=n, trigger="beat", status="SUCCEEDED").exists()
                             for n in JOBS), 90)
    finally:
        beat.stop()
    drain_worker(worker.node)  # (the worker has handled every message it took, and takes no more)
    log = worker.log()[log_start:]
    for name in JOBS:
        # then beat sent the job, and every beat run belongs to a whole-second scheduled time
        assert f"Scheduler: Sending due task {name} ({PeriodicTask.objects.get(name=name).task})" in beat.log()
        working = JobRun.objects.filter(job=name, trigger="beat").exclude(status="SKIPPED")
        slots = sorted(iso(r.scheduled_for) for r in working)
        assert slots and all(r.scheduled_for is not None and r.scheduled_for.microsecond == 0 for r in working)
        # and the worker started the job's work once for each of them, never twice for a time
        started = sorted(re.findall(rf"\[scheduler\] Starting job {name} \(trigger=beat, scheduled=(\S+), ", log))
        assert len(set(started)) == len(started) and started == slots, (name, started, slots)
    beat.cleanup()
