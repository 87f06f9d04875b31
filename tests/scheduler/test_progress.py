"""A running job reports how far it got; a run that dies keeps that count (issue 9, SPEC §3)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from scheduler_app.context import PROGRESS_INTERVAL_S, JobContext
from scheduler_app.models import JobRun
from scheduler_app.registry import get_spec

pytestmark = pytest.mark.django_db


def running_run() -> JobRun:
    return JobRun.objects.create(job="archive-audit-logs", trigger="manual", status="RUNNING", attempts=1,
                                 started_at=timezone.now(), task_id="archive-audit-logs:manual:p1")


def context(run: JobRun, *, dry_run: bool = False) -> JobContext:
    return JobContext(spec=get_spec("archive-audit-logs"), run_id=run.pk, trigger="manual", scheduled_for=None,
                      attempt=1, dry_run=dry_run)


def test_progress_is_written_at_most_every_interval_and_a_failed_run_keeps_it(monkeypatch):
    run = running_run()
    ctx = context(run)
    clock = {"now": 1000.0}  # the monotonic clock the throttle reads
    monkeypatch.setattr("scheduler_app.context.time.monotonic", lambda: clock["now"])
    # when the job reports 5,000 rows, then 10,000 half an interval later, then 15,000 a full interval later
    first = ctx.report_progress(5000, "5000 of 55000 rows")
    clock["now"] += PROGRESS_INTERVAL_S / 2
    second = ctx.report_progress(10_000, "10000 of 55000 rows")
    clock["now"] += PROGRESS_INTERVAL_S / 2
    third = ctx.report_progress(15_000, "15000 of 55000 rows")
    # then the first and the third were written, the second skipped
    assert (first, second, third) == (True, False, True)
    run.refresh_from_db()
    assert (run.items_processed, run.progress) == (15_000, "15000 of 55000 rows")
    # and when the run then fails, it keeps the count it reached
    JobRun.objects.finish(run, JobRun.Status.FAILED, error="killed")
    run.refresh_from_db()
    assert (run.status, run.items_processed) == ("FAILED", 15_000)
    # and a finished run takes no more progress
    assert context(run).report_progress(20_000, force=True) is False
    assert JobRun.objects.get(pk=run.pk).items_processed == 15_000


def test_a_dry_run_writes_no_progress():
    run = running_run()
    assert context(run, dry_run=True).report_progress(7, force=True) is False
    assert JobRun.objects.get(pk=run.pk).items_processed is None
