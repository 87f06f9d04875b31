"""seed_demo_data: realistic, reproducible demo data (SPEC §1)."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, F, Max, Q

from audit.models import AuditLog
from contributions.models import Contribution
from groups.models import Group, Membership, Round
from tests.factories import at, make_user

pytestmark = pytest.mark.django_db

NOW = at("2026-11-30 09:00:00")


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo_data", "--groups", "40", "--audit-logs", "3000", *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, list]:
    """Everything the seed decides, without database ids."""
    return {
        "users": sorted(get_user_model().objects.filter(username__startswith="demo-")
                        .values_list("username", "email", "first_name", "date_joined")),
        "groups": list(Group.objects.order_by("name").values_list(
            "name", "status", "min_members", "max_members", "contribution_amount", "currency", "total_rounds",
            "contract_address", "created_at", "activated_at", "completed_at")),
        "memberships": sorted(Membership.objects.values_list(
            "group__name", "user__username", "payout_position", "joined_at", "left_at")),
        "rounds": sorted(Round.objects.values_list(
            "group__name", "number", "recipient__user__username", "due_date", "status", "completed_at")),
        "contributions": sorted(Contribution.objects.values_list(
            "group__name", "membership__user__username", "round__number", "amount", "status", "created_at",
            "confirmed_at")),
        "audit": sorted(AuditLog.objects.values_list("action", "details", "metadata__client", "entity_type",
                                                     "created_at")),
    }


@time_machine.travel(NOW, tick=False)
def test_creates_realistic_data():
    # when
    output = seed("--seed", "7")

    # then: every group status, members around min_members, contracts or not
    statuses = set(Group.objects.values_list("status", flat=True))
    assert statuses == {Group.Status.PENDING, Group.Status.ACTIVE, Group.Status.COMPLETED}
    assert Group.objects.filter(status=Group.Status.PENDING, contract_address__isnull=True).exists()
    assert not Group.objects.exclude(status=Group.Status.PENDING).filter(contract_address__isnull=True).exists()
    assert {r.status for r in Round.objects.all()} == {Round.Status.OPEN, Round.Status.COMPLETED}
    assert set(Contribution.objects.values_list("status", flat=True)) == set(Contribution.Status.values)
    for group in Group.objects.exclude(status=Group.Status.PENDING):
        assert group.min_members <= group.memberships.count() <= group.max_members
    # about 10% of users without email
    users = get_user_model().objects.filter(username__startswith="demo-")
    share_without_email = users.filter(email="").count() / users.count()
    assert 0.03 <= share_without_email <= 0.2
    # confirmed contributions in the last weeks, never in the future
    confirmed = Contribution.objects.filter(status=Contribution.Status.CONFIRMED)
    assert confirmed.filter(confirmed_at__gte=NOW - dt.timedelta(days=14)).exists()
    assert not Contribution.objects.filter(created_at__gt=NOW).exists()
    # audit logs over the last year, about a third older than 90 days
    assert AuditLog.objects.count() == 3000
    assert not AuditLog.objects.filter(created_at__lt=NOW - dt.timedelta(days=365)).exists()
    old_share = AuditLog.objects.filter(created_at__lt=NOW - dt.timedelta(days=90)).count() / 3000
    assert 0.28 <= old_share <= 0.39
    # and the report states what is in the database
    lines = output.splitlines()
    by_status = {status: Group.objects.filter(status=status).count() for status in Group.Status.values}
    assert Group.objects.count() == 40
    assert (f"  groups: 40 ({by_status['PENDING']} PENDING, {by_status['ACTIVE']} ACTIVE, "
            f"{by_status['COMPLETED']} COMPLETED)") in lines
    old_logs = AuditLog.objects.filter(created_at__lt=NOW - dt.timedelta(days=90)).count()
    assert f"  audit logs: 3000 ({old_logs} older than 90 days)" in lines
    assert f"  users: {users.count()} ({users.filter(email='').count()} without email)" in lines
    assert f"  memberships: {Membership.objects.count()}" in lines


@time_machine.travel(NOW, tick=False)
def test_the_same_seed_gives_the_same_data_and_another_seed_does_not():
    # given
    seed("--seed", "7")
    first = snapshot()

    # when: replaced with the same seed
    seed("--seed", "7", "--force")

    # then
    assert snapshot() == first

    # when: another seed
    seed("--seed", "8", "--force")

    # then
    assert snapshot()["groups"] != first["groups"]


@time_machine.travel(NOW, tick=False)
def test_refuses_to_seed_twice_unless_told_what_to_do():
    # given
    seed()
    groups = Group.objects.count()

    # when / then: a second plain run is an error and changes nothing
    with pytest.raises(CommandError, match="already exists"):
        seed()
    assert Group.objects.count() == groups

    # when / then: --if-empty succeeds without changes
    assert "nothing to do" in seed("--if-empty")
    assert Group.objects.count() == groups


@time_machine.travel(NOW, tick=False)
def test_force_leaves_other_data_alone():
    # given: a real user and a real audit log next to the demo data
    real_user = make_user(username="operator")
    real_log = AuditLog.objects.create(action="USER_LOGIN", user=real_user, created_at=NOW)
    seed()

    # when
    seed("--force")

    # then
    assert get_user_model().objects.filter(pk=real_user.pk).exists()
    assert AuditLog.objects.filter(pk=real_log.pk, user=real_user).exists()
    assert AuditLog.objects.count() == 3001


@time_machine.travel(NOW, tick=False)
def test_membership_and_completion_times_are_consistent():
    # given: the seed and size where the times used to be wrong (3 members
    # leaving in the future; 9 of 27 COMPLETED groups completed before their
    # last round)
    call_command("seed_demo_data", "--groups", "200", "--audit-logs", "0", "--seed", "42", stdout=StringIO())

    # then: nobody joined or left in the future, nor left before joining
    memberships = Membership.objects.all()
    assert memberships.count() > 1000
    assert not memberships.filter(joined_at__gt=NOW).exists()
    left = memberships.filter(left_at__isnull=False)
    assert left.exists()
    assert not left.filter(left_at__gt=NOW).exists()
    assert not left.filter(left_at__lt=F("joined_at")).exists()

    # and: a COMPLETED group completed once its last round had, and not in the future
    completed_groups = Group.objects.filter(status=Group.Status.COMPLETED).annotate(
        last_round_done=Max("rounds__completed_at"),
        rounds_done=Count("rounds", filter=Q(rounds__status=Round.Status.COMPLETED)),
    )
    assert completed_groups.count() >= 20
    for group in completed_groups:
        assert group.rounds_done == group.total_rounds
        assert group.activated_at is not None and group.completed_at is not None, group.name
        assert group.activated_at <= group.last_round_done <= group.completed_at <= NOW, group.name
    # and no round completed in the future
    assert not Round.objects.filter(completed_at__gt=NOW).exists()
