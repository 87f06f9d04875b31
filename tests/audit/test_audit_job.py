"""The archive-audit-logs job (SPEC §3): registration and what the job function does."""

from __future__ import annotations

import pytest
import time_machine

from audit.models import ArchivedAuditLog, AuditLog
from audit.tasks import archive_audit_logs_task
from scheduler_app.jobs import REGISTRY, JobContext
from tests.factories import at, make_audit_log

NOW = at("2026-03-31 12:00:00")


def context(*, dry_run: bool = False, deadline: float | None = None) -> JobContext:
    return JobContext(spec=REGISTRY["archive-audit-logs"], run_id=0, trigger="manual", scheduled_for=None,
                      attempt=1, dry_run=dry_run, deadline=deadline)


def test_is_registered_with_the_spec_schedule_and_ttl():
    spec = REGISTRY["archive-audit-logs"]
    assert (spec.task_name, spec.crontab, spec.lock_ttl) == (
        "audit.tasks.archive_audit_logs_task", "0 2 * * *", 600,
    )
    # time limits above the lock TTL (the engine renews it) and well under 4 h
    assert spec.lock_ttl < spec.soft_time_limit < spec.time_limit < 4 * 3600


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_archives_with_the_default_retention_and_returns_rows_moved():
    # given: 90 days by default (cutoff 2025-12-31 12:00:00); one log before the cutoff, one at it
    before = make_audit_log(created_at=at("2025-12-31 11:59:59"))
    at_cutoff = make_audit_log(created_at=at("2025-12-31 12:00:00"))

    # when
    moved = archive_audit_logs_task.job_function(context())

    # then
    assert moved == 1
    assert list(ArchivedAuditLog.objects.values_list("original_id", flat=True)) == [before.id]
    assert list(AuditLog.objects.values_list("id", flat=True)) == [at_cutoff.id]


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_dry_run_changes_nothing():
    make_audit_log(created_at=at("2025-12-01 00:00:00"))
    assert archive_audit_logs_task.job_function(context(dry_run=True)) == 1
    assert AuditLog.objects.count() == 1 and not ArchivedAuditLog.objects.exists()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_spent_time_budget_stops_before_the_first_batch():
    # given: a context whose deadline has passed
    make_audit_log(created_at=at("2025-12-01 00:00:00"))

    # when
    moved = archive_audit_logs_task.job_function(context(deadline=0.0))

    # then: nothing moved, the next run does it
    assert moved == 0
    assert AuditLog.objects.count() == 1
