"""The send-contribution-summaries job (SPEC §3): registration and what the job function does."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from contributions.models import SummaryDelivery, WeeklySummary
from contributions.tasks import send_contribution_summaries_task
from groups.models import Group, Round
from scheduler_app.jobs import REGISTRY, JobContext
from tests.factories import at, make_contribution, make_group, make_member, make_round


def context(*, scheduled_for: dt.datetime | None = None, dry_run: bool = False) -> JobContext:
    return JobContext(spec=REGISTRY["send-contribution-summaries"], run_id=0,
                      trigger="beat" if scheduled_for else "manual", scheduled_for=scheduled_for,
                      attempt=1, dry_run=dry_run)


def test_is_registered_with_the_spec_schedule_and_ttl():
    spec = REGISTRY["send-contribution-summaries"]
    assert (spec.task_name, spec.crontab, spec.lock_ttl) == (
        "contributions.tasks.send_contribution_summaries_task", "0 9 * * 1", 600,
    )
    assert spec.lock_ttl < spec.soft_time_limit < spec.time_limit < 4 * 3600


@pytest.fixture
def group_with_two_members():
    group = make_group(status=Group.Status.ACTIVE, deployed=True)
    first = make_member(group, position=1)
    make_member(group, position=2)
    current = make_round(group, number=1, recipient=first, status=Round.Status.OPEN)
    make_contribution(first, current, confirmed_at=at("2026-11-25 10:00:00"))
    return group


@pytest.mark.django_db
@time_machine.travel(at("2026-12-01 03:00:00"), tick=False)
def test_a_late_beat_run_summarises_the_week_of_its_scheduled_monday(group_with_two_members, mailoutbox):
    # given: the run of Monday 2026-11-30 09:00 starts late, on Tuesday 2026-12-01

    # when
    sent = send_contribution_summaries_task.job_function(context(scheduled_for=at("2026-11-30 09:00:00")))

    # then: the week of 23 Nov, one email per member
    assert sent == 2 and len(mailoutbox) == 2
    summary = WeeklySummary.objects.get()
    assert (summary.week_start, summary.contribution_count) == (dt.date(2026, 11, 23), 1)
    assert SummaryDelivery.objects.count() == 2


@pytest.mark.django_db
@time_machine.travel(at("2026-11-30 09:00:00"), tick=False)
def test_dry_run_sends_and_writes_nothing(group_with_two_members, mailoutbox):
    assert send_contribution_summaries_task.job_function(context(dry_run=True)) == 2
    assert mailoutbox == []
    assert not WeeklySummary.objects.exists() and not SummaryDelivery.objects.exists()
