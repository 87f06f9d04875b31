"""check_inactive_groups: SPEC §5, last paragraph.

With now = 2026-11-30 12:00:00 UTC and 30 days the window starts at
2026-10-31 12:00:00 UTC (November has 30 days).
"""

from __future__ import annotations

import pytest
import time_machine

from contributions.models import Contribution
from contributions.services import check_inactive_groups
from groups.models import Group, Round
from tests.factories import at, make_contribution, make_group, make_members, make_round

pytestmark = pytest.mark.django_db

NOW = at("2026-11-30 12:00:00")


def group_with_contribution(*, activated_at: str, confirmed_at: str | None = None,
                            status: str = Contribution.Status.CONFIRMED, group_status: str = Group.Status.ACTIVE):
    """A group activated at ``activated_at``; with one contribution when ``confirmed_at`` is given."""
    group = make_group(status=group_status, deployed=True, activated_at=at(activated_at))
    members = make_members(group, 3)
    first_round = make_round(group, number=1, recipient=members[0], status=Round.Status.OPEN)
    if confirmed_at is not None:
        if status == Contribution.Status.CONFIRMED:
            make_contribution(members[1], first_round, confirmed_at=at(confirmed_at))
        else:
            make_contribution(members[1], first_round, status=status, created_at=at(confirmed_at))
    return group


@time_machine.travel(NOW, tick=False)
def test_lists_active_groups_without_a_recent_confirmed_contribution():
    # given
    recent = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-11-20 10:00:00")
    stale = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-10-15 10:00:00")
    only_pending = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-11-25 10:00:00",
                                           status=Contribution.Status.PENDING)
    only_failed = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-11-25 10:00:00",
                                          status=Contribution.Status.FAILED)
    never_old = group_with_contribution(activated_at="2026-10-01 00:00:00")
    never_new = group_with_contribution(activated_at="2026-11-15 00:00:00")

    # when
    inactive = check_inactive_groups(days=30)

    # then: the clock starts at activated_at when there is no confirmed contribution
    assert [g.id for g in inactive] == sorted([stale.id, only_pending.id, only_failed.id, never_old.id])
    assert recent.id not in {g.id for g in inactive}
    assert never_new.id not in {g.id for g in inactive}


@time_machine.travel(NOW, tick=False)
def test_window_edges():
    # given: activity exactly at the window's start counts; a second earlier does not
    at_start = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-10-31 12:00:00")
    before_start = group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-10-31 11:59:59")
    activated_at_start = group_with_contribution(activated_at="2026-10-31 12:00:00")
    activated_before_start = group_with_contribution(activated_at="2026-10-31 11:59:59")

    # when
    inactive = {g.id for g in check_inactive_groups(days=30)}

    # then
    assert inactive == {before_start.id, activated_before_start.id}
    assert at_start.id not in inactive and activated_at_start.id not in inactive


@time_machine.travel(NOW, tick=False)
def test_only_active_groups_are_listed():
    # given: PENDING and COMPLETED groups that have been quiet for months
    group_with_contribution(activated_at="2026-01-01 00:00:00", group_status=Group.Status.PENDING)
    group_with_contribution(activated_at="2026-01-01 00:00:00", group_status=Group.Status.COMPLETED)

    # when / then
    assert check_inactive_groups(days=30) == []


@time_machine.travel(NOW, tick=False)
def test_days_default_from_settings(settings):
    # given: a 7-day window starting 2026-11-23 12:00:00
    settings.INACTIVE_GROUP_DAYS = 7
    quiet_for_ten_days = group_with_contribution(activated_at="2026-06-01 00:00:00",
                                                 confirmed_at="2026-11-20 10:00:00")

    # when / then
    assert [g.id for g in check_inactive_groups()] == [quiet_for_ten_days.id]


@time_machine.travel(NOW, tick=False)
def test_is_one_query_however_many_groups(django_assert_num_queries):
    # given
    for _ in range(5):
        group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-10-01 10:00:00")
        group_with_contribution(activated_at="2026-06-01 00:00:00", confirmed_at="2026-11-29 10:00:00")

    # when / then
    with django_assert_num_queries(1):
        assert len(check_inactive_groups(days=30)) == 5
