"""The update-group-statuses job (SPEC §3): registration and what the job function does.

The job lives in ``contributions.tasks`` (it also checks contributions, and
``groups`` must not import ``contributions``); its name, crontab and TTL are
SPEC §3's.
"""

from __future__ import annotations

import logging
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from contributions.tasks import update_group_statuses_task
from groups.models import Group, Round
from scheduler_app.jobs import REGISTRY, JobContext
from tests.factories import at, make_group, make_members, make_round

NOW = at("2026-11-30 10:00:00")


def context(*, dry_run: bool = False) -> JobContext:
    return JobContext(spec=REGISTRY["update-group-statuses"], run_id=0, trigger="manual", scheduled_for=None,
                      attempt=1, dry_run=dry_run)


def test_is_registered_with_the_spec_schedule_and_ttl():
    spec = REGISTRY["update-group-statuses"]
    assert (spec.task_name, spec.crontab, spec.lock_ttl) == (
        "contributions.tasks.update_group_statuses_task", "0 * * * *", 300,
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


@pytest.mark.django_db
def test_sync_schedules_points_a_schedule_of_the_old_module_at_the_new_one():
    # given: the schedule an earlier release created, for the task's old path, edited by an admin
    edited, _ = CrontabSchedule.objects.get_or_create(minute="30", hour="*", day_of_month="*", month_of_year="*",
                                                      day_of_week="*", timezone="UTC")
    PeriodicTask.objects.create(name="update-group-statuses", task="groups.tasks.update_group_statuses_task",
                                crontab=edited)

    # when
    out = StringIO()
    call_command("sync_schedules", stdout=out)

    # then: the same schedule runs the task from its new module; the admin's crontab stays
    periodic = PeriodicTask.objects.get(name="update-group-statuses")
    assert periodic.task == "contributions.tasks.update_group_statuses_task"
    assert periodic.crontab_id == edited.pk
    assert "update-group-statuses: now runs task 'contributions.tasks.update_group_statuses_task'" in out.getvalue()
