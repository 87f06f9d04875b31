"""update_group_statuses: SPEC §5 "Group statuses" (every example of the section)."""

from __future__ import annotations

import logging
import threading

import pytest
import time_machine
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from groups.models import Group, Round
from groups.services import update_group_statuses
from tests.dbfaults import REJECTED, rejecting
from tests.factories import at, make_group, make_member, make_members, make_round

pytestmark = pytest.mark.django_db

NOW = at("2026-11-30 10:00:00")
EARLIER = at("2026-10-01 08:00:00")


def pending_group(*, members: int, deployed: bool = True, min_members: int = 3, left: int = 0) -> Group:
    """A PENDING group with ``members`` active members and ``left`` members who left."""
    group = make_group(min_members=min_members, deployed=deployed)
    make_members(group, members)
    for offset in range(left):
        make_member(group, position=members + offset + 1, left_at=EARLIER)
    return group


def active_group(*, total_rounds: int = 3, completed_rounds: int) -> Group:
    """An ACTIVE group with ``completed_rounds`` of its ``total_rounds`` rounds COMPLETED, the rest OPEN."""
    with time_machine.travel(EARLIER, tick=False):
        group = make_group(status=Group.Status.ACTIVE, deployed=True, total_rounds=total_rounds)
    members = make_members(group, total_rounds)
    for number in range(1, total_rounds + 1):
        status = Round.Status.COMPLETED if number <= completed_rounds else Round.Status.OPEN
        make_round(group, number=number, recipient=members[number - 1], status=status)
    return group


def status_of(group: Group) -> str:
    group.refresh_from_db()
    return group.status


@time_machine.travel(NOW, tick=False)
def test_three_active_members_and_a_contract_activate_the_group():
    # given: min_members 3, contract deployed, 3 active members
    group = pending_group(members=3)

    # when
    changed = update_group_statuses()

    # then
    assert changed == 1
    group.refresh_from_db()
    assert group.status == Group.Status.ACTIVE
    assert group.activated_at == NOW


@time_machine.travel(NOW, tick=False)
def test_more_members_than_the_minimum_also_activate():
    group = pending_group(members=4)
    assert update_group_statuses() == 1
    assert status_of(group) == Group.Status.ACTIVE


@time_machine.travel(NOW, tick=False)
def test_two_active_members_stay_pending():
    # given: 2 of the 3 members needed
    group = pending_group(members=2)

    # when
    changed = update_group_statuses()

    # then
    assert changed == 0
    assert status_of(group) == Group.Status.PENDING


@time_machine.travel(NOW, tick=False)
def test_three_members_of_whom_one_left_stay_pending():
    # given: 3 members, one of whom left: 2 active
    group = pending_group(members=2, left=1)

    # when / then
    assert update_group_statuses() == 0
    assert status_of(group) == Group.Status.PENDING
    assert group.activated_at is None


@time_machine.travel(NOW, tick=False)
def test_three_members_without_a_contract_stay_pending():
    group = pending_group(members=3, deployed=False)
    assert update_group_statuses() == 0
    assert status_of(group) == Group.Status.PENDING


@time_machine.travel(NOW, tick=False)
def test_all_rounds_completed_complete_the_group():
    # given: total_rounds 3 with 3 completed rounds
    group = active_group(total_rounds=3, completed_rounds=3)

    # when
    changed = update_group_statuses()

    # then
    assert changed == 1
    group.refresh_from_db()
    assert group.status == Group.Status.COMPLETED
    assert group.completed_at == NOW
    assert group.activated_at == EARLIER


@time_machine.travel(NOW, tick=False)
def test_two_of_three_rounds_completed_stay_active():
    group = active_group(total_rounds=3, completed_rounds=2)
    assert update_group_statuses() == 0
    assert status_of(group) == Group.Status.ACTIVE


@time_machine.travel(NOW, tick=False)
def test_completed_never_changes():
    # given: a COMPLETED group that would meet both other rules
    with time_machine.travel(EARLIER, tick=False):
        group = make_group(status=Group.Status.COMPLETED, deployed=True, total_rounds=3)
    members = make_members(group, 3)
    for number in (1, 2, 3):
        make_round(group, number=number, recipient=members[number - 1], status=Round.Status.COMPLETED)

    # when
    changed = update_group_statuses()

    # then
    assert changed == 0
    group.refresh_from_db()
    assert (group.status, group.completed_at, group.activated_at) == (Group.Status.COMPLETED, EARLIER, EARLIER)
    assert not AuditLog.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_each_change_writes_one_audit_log():
    # given: one group to activate, one to complete, one to leave alone
    to_activate = pending_group(members=3)
    to_complete = active_group(completed_rounds=3)
    pending_group(members=1)

    # when
    changed = update_group_statuses()

    # then: two changes, two audit logs with the old and new status
    assert changed == 2
    logs = {
        log.entity_id: log
        for log in AuditLog.objects.filter(action="GROUP_STATUS_CHANGED")
    }
    assert set(logs) == {str(to_activate.id), str(to_complete.id)}
    activated = logs[str(to_activate.id)]
    assert (activated.entity_type, activated.details, activated.user_id, activated.created_at) == (
        "group", "PENDING -> ACTIVE", None, NOW,
    )
    assert logs[str(to_complete.id)].details == "ACTIVE -> COMPLETED"
    assert AuditLog.objects.count() == 2


@pytest.mark.parametrize("rejected", ["PENDING -> ACTIVE", "ACTIVE -> COMPLETED"])
@pytest.mark.django_db(transaction=True)
def test_a_status_change_whose_audit_log_fails_is_rolled_back(rejected):
    # given: a group to activate, a group to complete, and a database that
    # refuses the audit log of one of the two transitions (after its UPDATE ran)
    groups = {"PENDING -> ACTIVE": pending_group(members=3), "ACTIVE -> COMPLETED": active_group(completed_rounds=3)}
    before = {details: (group.status, group.activated_at, group.completed_at) for details, group in groups.items()}

    # when
    refuse = rejecting("INSERT", AuditLog._meta.db_table, when=f"NEW.details = '{rejected}'")
    with refuse, pytest.raises(DatabaseError, match=REJECTED):
        update_group_statuses(now=NOW)

    # then: the refused transition changed no group and left no audit log
    refused = groups[rejected]
    refused.refresh_from_db()
    assert (refused.status, refused.activated_at, refused.completed_at) == before[rejected]
    assert not AuditLog.objects.filter(entity_id=str(refused.id)).exists()
    # and: any group that did change has its one audit log, and every log belongs to a change
    changes = 0
    for details, group in groups.items():
        group.refresh_from_db()
        changed = (group.status, group.activated_at, group.completed_at) != before[details]
        changes += changed
        logs = list(AuditLog.objects.filter(entity_type="group", entity_id=str(group.id))
                    .values_list("details", flat=True))
        assert logs == ([details] if changed else []), details
    assert AuditLog.objects.count() == changes


@time_machine.travel(NOW, tick=False)
def test_a_second_run_changes_nothing_and_logs_nothing():
    # given: a run that activated one group
    group = pending_group(members=3)
    assert update_group_statuses() == 1

    # when
    changed = update_group_statuses()

    # then: only the first run's log
    assert changed == 0
    assert list(AuditLog.objects.values_list("entity_type", "entity_id", "details")) == [
        ("group", str(group.id), "PENDING -> ACTIVE"),
    ]


@time_machine.travel(NOW, tick=False)
def test_a_group_moves_one_status_per_run():
    # given: a PENDING group that qualifies and whose rounds are all completed already
    group = pending_group(members=3)
    members = list(group.memberships.all())
    for number in (1, 2, 3):
        make_round(group, number=number, recipient=members[number - 1], status=Round.Status.COMPLETED)

    # when / then: activated by this run, completed by the next
    assert update_group_statuses() == 1
    assert status_of(group) == Group.Status.ACTIVE
    assert update_group_statuses() == 1
    assert status_of(group) == Group.Status.COMPLETED
    assert list(AuditLog.objects.order_by("id").values_list("details", flat=True)) == [
        "PENDING -> ACTIVE", "ACTIVE -> COMPLETED",
    ]


@time_machine.travel(NOW, tick=False)
def test_dry_run_counts_and_changes_nothing():
    # given
    group = pending_group(members=3)
    active_group(completed_rounds=3)

    # when
    would_change = update_group_statuses(dry_run=True)

    # then
    assert would_change == 2
    assert status_of(group) == Group.Status.PENDING
    assert not AuditLog.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_logs_the_counts_per_transition(caplog):
    # given
    pending_group(members=3)
    pending_group(members=4)
    active_group(completed_rounds=3)

    # when
    with caplog.at_level(logging.INFO, logger="groups"):
        update_group_statuses()

    # then
    assert ("groups", logging.INFO, "Updated 3 group statuses (2 PENDING -> ACTIVE, 1 ACTIVE -> COMPLETED)") in (
        caplog.record_tuples
    )


def _queries_for(groups_per_kind: int) -> list[str]:
    for _ in range(groups_per_kind):
        pending_group(members=3)
        pending_group(members=2)
        active_group(completed_rounds=3)
        active_group(completed_rounds=1)
    with CaptureQueriesContext(connection) as queries:
        changed = update_group_statuses()
    assert changed == 2 * groups_per_kind
    return [q["sql"] for q in queries.captured_queries]


@time_machine.travel(NOW, tick=False)
def test_query_count_does_not_grow_with_the_number_of_groups():
    # given / when: 2 groups of each kind, then 20 more of each
    small = _queries_for(2)
    large = _queries_for(20)

    # then: the same number of queries: an UPDATE and an INSERT per
    # transition (plus the savepoints of the test's transaction)
    assert len(small) == len(large)
    statements = [sql.split()[0] for sql in large if not sql.startswith(("SAVEPOINT", "RELEASE"))]
    assert statements == ["UPDATE", "INSERT", "UPDATE", "INSERT"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_change_each_group_once_and_log_it_once():
    # given: 30 groups ready to activate and two runs started at the same moment
    groups = [pending_group(members=3) for _ in range(30)]
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(update_group_statuses(now=NOW))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then: between them the runs changed each group once, with one audit log each
    assert errors == []
    assert sum(results) == 30
    assert Group.objects.filter(id__in=[g.id for g in groups], status=Group.Status.ACTIVE).count() == 30
    assert sorted(AuditLog.objects.values_list("action", "entity_type", "entity_id", "details")) == sorted(
        ("GROUP_STATUS_CHANGED", "group", str(g.id), "PENDING -> ACTIVE") for g in groups
    )
