"""generate_weekly_summaries: SPEC §5 "Weekly summaries" (which contributions count, one summary per group)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contributions.models import Contribution, WeeklySummary
from contributions.services import generate_weekly_summaries
from groups.models import Group, Round
from tests.factories import at, make_contribution, make_group, make_members, make_round

pytestmark = pytest.mark.django_db

MONDAY_RUN = at("2026-11-30 09:00:00")
WEEK_START = dt.date(2026, 11, 23)


def active_group_with_round(**group_fields):
    group = make_group(status=Group.Status.ACTIVE, deployed=True, **group_fields)
    members = make_members(group, 3)
    current = make_round(group, number=1, recipient=members[0], status=Round.Status.OPEN)
    return group, members, current


@time_machine.travel(MONDAY_RUN, tick=False)
def test_counts_confirmed_contributions_inside_the_week_only():
    # given: contributions on both sides of each edge of 2026-11-23 00:00 .. 2026-11-30 00:00
    group, members, current = active_group_with_round()
    make_contribution(members[0], current, amount="50.00", confirmed_at=at("2026-11-29 23:59:59"))  # counts
    make_contribution(members[1], current, amount="25.50", confirmed_at=at("2026-11-23 00:00:00"))  # counts
    make_contribution(members[2], current, amount="10.00", confirmed_at=at("2026-11-30 00:00:00"))  # next week
    make_contribution(members[2], current, amount="11.00", confirmed_at=at("2026-11-22 23:59:59"))  # last week
    make_contribution(members[1], current, amount="12.00", status=Contribution.Status.PENDING,
                      created_at=at("2026-11-25 10:00:00"))
    make_contribution(members[1], current, amount="13.00", status=Contribution.Status.FAILED,
                      created_at=at("2026-11-25 11:00:00"))

    # when
    [summary] = generate_weekly_summaries()

    # then: 50.00 + 25.50
    assert summary.group_id == group.id
    assert summary.week_start == WEEK_START
    assert summary.contribution_count == 2
    assert summary.total_amount == Decimal("75.50")
    assert isinstance(summary.total_amount, Decimal)


@time_machine.travel(MONDAY_RUN, tick=False)
def test_every_active_group_gets_one_summary_and_no_other_group_does():
    # given
    quiet, _, _ = active_group_with_round()
    busy, members, current = active_group_with_round()
    make_contribution(members[0], current, amount="20.00", confirmed_at=at("2026-11-24 10:00:00"))
    make_group(status=Group.Status.PENDING)
    make_group(status=Group.Status.COMPLETED)

    # when
    summaries = generate_weekly_summaries()

    # then: a quiet group gets a summary of zero
    by_group = {s.group_id: (s.contribution_count, s.total_amount) for s in summaries}
    assert by_group == {quiet.id: (0, Decimal("0.00")), busy.id: (1, Decimal("20.00"))}
    assert WeeklySummary.objects.count() == 2


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_second_run_keeps_the_first_summaries():
    # given: a first run, then a late confirmation inside the same week
    group, members, current = active_group_with_round()
    make_contribution(members[0], current, amount="20.00", confirmed_at=at("2026-11-24 10:00:00"))
    [first] = generate_weekly_summaries()
    make_contribution(members[1], current, amount="30.00", confirmed_at=at("2026-11-25 10:00:00"))

    # when
    [second] = generate_weekly_summaries()

    # then: the same row with the same figures, so every member is sent the same totals
    assert second.pk == first.pk
    assert (second.contribution_count, second.total_amount) == (1, Decimal("20.00"))
    assert WeeklySummary.objects.count() == 1


def test_totals_follow_time_zone(settings):
    # given: TIME_ZONE Berlin (UTC+1): the week is 2026-11-22 23:00 UTC .. 2026-11-29 23:00 UTC
    settings.TIME_ZONE = "Europe/Berlin"
    group, members, current = active_group_with_round()
    make_contribution(members[0], current, amount="1.00", confirmed_at=at("2026-11-22 23:00:00"))  # Mon 00:00
    make_contribution(members[0], current, amount="2.00", confirmed_at=at("2026-11-29 22:59:59"))  # Sun 23:59:59
    make_contribution(members[1], current, amount="4.00", confirmed_at=at("2026-11-29 23:00:00"))  # next Mon 00:00
    make_contribution(members[1], current, amount="8.00", confirmed_at=at("2026-11-22 22:59:59"))  # Sun before

    # when: the run of Monday 09:00 Berlin time
    [summary] = generate_weekly_summaries(now=at("2026-11-30 08:00:00"))

    # then: 1.00 + 2.00
    assert summary.week_start == WEEK_START
    assert (summary.contribution_count, summary.total_amount) == (2, Decimal("3.00"))


@time_machine.travel(MONDAY_RUN, tick=False)
def test_dry_run_creates_nothing():
    # given
    group, members, current = active_group_with_round()
    make_contribution(members[0], current, amount="20.00", confirmed_at=at("2026-11-24 10:00:00"))

    # when
    [summary] = generate_weekly_summaries(dry_run=True)

    # then: the would-be summary, unsaved
    assert summary.pk is None
    assert (summary.group_id, summary.week_start, summary.contribution_count, summary.total_amount) == (
        group.id, WEEK_START, 1, Decimal("20.00"),
    )
    assert not WeeklySummary.objects.exists()


def _generate_queries(groups: int) -> int:
    for _ in range(groups):
        _, members, current = active_group_with_round()
        make_contribution(members[0], current, confirmed_at=at("2026-11-24 10:00:00"))
    WeeklySummary.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        summaries = generate_weekly_summaries()
    assert len(summaries) == Group.objects.filter(status=Group.Status.ACTIVE).count()
    return len(queries.captured_queries)


@time_machine.travel(MONDAY_RUN, tick=False)
def test_query_count_does_not_grow_with_the_number_of_groups():
    # given / when: 2 active groups, then 20 more
    small = _generate_queries(2)
    large = _generate_queries(20)

    # then: one INSERT ... SELECT and one SELECT either way
    assert small == large == 2
