"""The update-group-statuses job (SPEC §3): registration and what the job function does."""

from __future__ import annotations

import logging

import pytest
import time_machine

from groups.models import Group, Round
from groups.tasks import update_group_statuses_task
from scheduler_app.jobs import REGISTRY, JobContext
from tests.factories import at, make_group, make_members, make_round

NOW = at("2026-11-30 10:00:00")


def context(*, dry_run: bool = False) -> JobContext:
    return JobContext(spec=REGISTRY["update-group-statuses"], run_id=0, trigger="manual", scheduled_for=None,
                      attempt=1, dry_run=dry_run)


def test_is_registered_with_the_spec_schedule_and_ttl():
    spec = REGISTRY["update-group-statuses"]
    assert (spec.task_name, spec.crontab, spec.lock_ttl) == (
        "groups.tasks.update_group_statuses_task", "0 * * * *", 300,
    )
    # above the lock TTL, and done well before the next hourly run
    assert spec.lock_ttl < spec.soft_time_limit < spec.time_limit < 3600


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_changes_statuses_returns_the_count_and_logs_inactive_groups(caplog):
    # given: a group ready to activate, and an active group quiet since October
    ready = make_group(deployed=True, min_members=3)
    make_members(ready, 3)
    quiet = make_group(status=Group.Status.ACTIVE, deployed=True, activated_at=at("2026-10-01 00:00:00"))
    members = make_members(quiet, 3)
    make_round(quiet, number=1, recipient=members[0], status=Round.Status.OPEN)

    # when
    with caplog.at_level(logging.INFO, logger="groups"):
        changed = update_group_statuses_task.job_function(context())

    # then: one change; one inactive group (the one just activated is not)
    assert changed == 1
    ready.refresh_from_db()
    assert ready.status == Group.Status.ACTIVE
    assert ("groups", logging.INFO,
            "1 active groups without a confirmed contribution in the last 30 days") in caplog.record_tuples


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_dry_run_changes_nothing():
    ready = make_group(deployed=True, min_members=3)
    make_members(ready, 3)
    assert update_group_statuses_task.job_function(context(dry_run=True)) == 1
    ready.refresh_from_db()
    assert ready.status == Group.Status.PENDING
