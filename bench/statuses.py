"""Group statuses: ``groups.services.update_group_statuses`` against one plain UPDATE per transition.

The seeded groups come in twenty buckets (``k % 20`` of the 0-based group
index); 60% of them change status:

====== ============================================================ ===========
bucket group                                                        outcome
====== ============================================================ ===========
0-7    PENDING, contract deployed, 3 active members, min_members 3   -> ACTIVE
8-9    PENDING, deployed, 3 members of whom one left                stays
10-11  PENDING, no contract, 3 active members                       stays
12-15  ACTIVE, total_rounds 3, rounds 1-3 COMPLETED                 -> COMPLETED
16-17  ACTIVE, rounds 1-2 COMPLETED, round 3 OPEN                   stays
18-19  COMPLETED                                                    stays
====== ============================================================ ===========

The job and the plain SQL run on identical data: after each run the changed
groups are put back (they are recognisable by ``activated_at`` /
``completed_at`` equal to the run's ``now``) and its audit logs deleted.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

from django.contrib.auth import get_user_model
from django.db import connection, reset_queries, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from bench import sql
from groups.models import Group, Membership, Round
from groups.services import update_group_statuses

NOW = dt.datetime(2026, 11, 30, 10, 0, 0, tzinfo=dt.UTC)
#: Share of the seeded groups that change status (buckets 0-7 and 12-15 of 20).
TRANSITION_SHARE = 12 / 20


def seed(groups: int) -> int:
    """Empty the group tables and seed ``groups`` groups (a multiple of 20); return the transitions expected."""
    if groups % 20:
        raise ValueError("groups must be a multiple of 20")
    sql.flush(Group, get_user_model())
    users = [
        get_user_model().objects.create(username=f"bench-status-{n}", email=f"status{n}@example.com", password="!")
        for n in (1, 2, 3)
    ]
    created = NOW - dt.timedelta(days=60)
    deployed = NOW - dt.timedelta(days=45)
    activated = NOW - dt.timedelta(days=30)
    finished = NOW - dt.timedelta(days=1)
    p = sql.ts_param()
    bucket = "((i - 1) %% 20)"
    sql.insert_series(
        Group,
        ("name", "status", "min_members", "max_members", "contribution_amount", "currency", "total_rounds",
         "contract_address", "contract_deployed_at", "created_at", "activated_at", "completed_at"),
        "'bench group ' || i, "
        f"CASE WHEN {bucket} < 12 THEN 'PENDING' WHEN {bucket} < 18 THEN 'ACTIVE' ELSE 'COMPLETED' END, "
        "3, 5, 50, 'USD', 3, "
        f"CASE WHEN {bucket} IN (10, 11) THEN NULL ELSE '0x' || i END, "
        f"CASE WHEN {bucket} IN (10, 11) THEN NULL ELSE {p} END, "
        f"{p}, "
        f"CASE WHEN {bucket} >= 12 THEN {p} ELSE NULL END, "
        f"CASE WHEN {bucket} >= 18 THEN {p} ELSE NULL END",
        groups,
        [sql.ts(deployed), sql.ts(created), sql.ts(activated), sql.ts(finished)],
    )
    first_group = sql.min_id(Group)
    # Membership i: group index k = (i - 1) / 3, position (i - 1) % 3 + 1.
    k_bucket = "(((i - 1) / 3) %% 20)"
    position = "((i - 1) %% 3 + 1)"
    sql.insert_series(
        Membership,
        ("group", "user", "payout_position", "joined_at", "left_at"),
        f"%s + (i - 1) / 3, CASE {position} WHEN 1 THEN %s WHEN 2 THEN %s ELSE %s END, {position}, {p}, "
        f"CASE WHEN {k_bucket} IN (8, 9) AND {position} = 3 THEN {p} ELSE NULL END",
        groups * 3,
        [first_group, *(user.pk for user in users), sql.ts(created), sql.ts(activated)],
    )
    first_membership = sql.min_id(Membership)
    # Round i of the ACTIVE/COMPLETED groups: number = position, recipient = membership i.
    sql.insert_series(
        Round,
        ("group", "number", "recipient", "due_date", "status", "completed_at"),
        f"%s + (i - 1) / 3, {position}, %s + i - 1, %s, "
        f"CASE WHEN {k_bucket} IN (16, 17) AND {position} = 3 THEN 'OPEN' ELSE 'COMPLETED' END, "
        f"CASE WHEN {k_bucket} IN (16, 17) AND {position} = 3 THEN NULL ELSE {p} END",
        groups * 3,
        [first_group, first_membership, NOW.date(), sql.ts(finished)],
        where=f"{k_bucket} >= 12",
    )
    sql.settle(Group, Membership, Round, AuditLog)
    return round(groups * TRANSITION_SHARE)


def restore() -> None:
    """Put back the groups the last run changed and delete its audit logs."""
    status, activated_at, completed_at = (
        sql.column(Group, name) for name in ("status", "activated_at", "completed_at")
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {sql.table(Group)} SET {status} = 'PENDING', {activated_at} = NULL "
            f"WHERE {activated_at} = {sql.ts_param()}",
            [sql.ts(NOW)],
        )
        cursor.execute(
            f"UPDATE {sql.table(Group)} SET {status} = 'ACTIVE', {completed_at} = NULL "
            f"WHERE {completed_at} = {sql.ts_param()}",
            [sql.ts(NOW)],
        )
        cursor.execute(f"DELETE FROM {sql.table(AuditLog)}")
    sql.settle(Group, AuditLog)


def run_job() -> tuple[int, float, int]:
    """The service once; return (groups changed, seconds, queries)."""
    reset_queries()  # CaptureQueriesContext counts in a log capped at 9,000 queries
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        changed = update_group_statuses(now=NOW)
        seconds = time.perf_counter() - started
    return changed, seconds, len(queries)


def run_raw_sql(*, with_audit: bool = False) -> tuple[int, float]:
    """One plain UPDATE per transition (completions first, like the service); return (changed, seconds).

    ``with_audit`` also writes the service's audit rows (one ``INSERT ...
    SELECT`` per transition over the changed ids), for context.
    """
    g = sql.table(Group)
    status, group_id = sql.column(Group, "status"), sql.column(Group, "id")
    completed = (
        f"UPDATE {g} SET {status} = 'COMPLETED', {sql.column(Group, 'completed_at')} = {sql.ts_param()} "
        f"WHERE {status} = 'ACTIVE' AND {sql.column(Group, 'total_rounds')} <= ("
        f"SELECT COUNT(*) FROM {sql.table(Round)} r WHERE r.{sql.column(Round, 'group')} = {g}.{group_id} "
        f"AND r.{sql.column(Round, 'status')} = 'COMPLETED' "
        f"AND r.{sql.column(Round, 'number')} <= {g}.{sql.column(Group, 'total_rounds')})"
    )
    address = sql.column(Group, "contract_address")
    activated = (
        f"UPDATE {g} SET {status} = 'ACTIVE', {sql.column(Group, 'activated_at')} = {sql.ts_param()} "
        f"WHERE {status} = 'PENDING' AND {address} IS NOT NULL AND {address} <> '' "
        f"AND {sql.column(Group, 'min_members')} <= ("
        f"SELECT COUNT(*) FROM {sql.table(Membership)} m WHERE m.{sql.column(Membership, 'group')} = {g}.{group_id} "
        f"AND m.{sql.column(Membership, 'left_at')} IS NULL)"
    )
    audit_columns = sql.columns(AuditLog, "action", "details", "metadata", "entity_type", "entity_id", "created_at")
    stamp = {"COMPLETED": sql.column(Group, "completed_at"), "ACTIVE": sql.column(Group, "activated_at")}

    def audit(cursor, old: str, new: str) -> None:
        metadata = sql.json_param(f"'{{\"old_status\": \"{old}\", \"new_status\": \"{new}\"}}'")
        cursor.execute(
            f"INSERT INTO {sql.table(AuditLog)} ({audit_columns}) "
            f"SELECT 'GROUP_STATUS_CHANGED', '{old} -> {new}', {metadata}, 'group', CAST({group_id} AS TEXT), "
            f"{sql.ts_param()} "
            f"FROM {g} WHERE {status} = '{new}' AND {stamp[new]} = {sql.ts_param()}",
            [sql.ts(NOW), sql.ts(NOW)],
        )

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(completed, [sql.ts(NOW)])
        changed = cursor.rowcount
        if with_audit:
            audit(cursor, "ACTIVE", "COMPLETED")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(activated, [sql.ts(NOW)])
        changed += cursor.rowcount
        if with_audit:
            audit(cursor, "PENDING", "ACTIVE")
    return changed, time.perf_counter() - started


def run(*, groups: int, rounds: int = 3, log=print) -> dict[str, float | int]:
    """Measure the job and plain SQL (interleaved, median of ``rounds``) and the query counts; return ``statuses.*``."""
    log(f"statuses: seeding {groups * 10:,} groups for the query count at 10x")
    expected = seed(groups * 10)
    changed, seconds_10x, queries_10x = run_job()
    _check("job at 10x", changed, expected)

    log(f"statuses: seeding {groups:,} groups")
    expected = seed(groups)
    job_times, raw_times, audit_times, query_counts = [], [], [], []
    for _ in range(rounds):
        changed, seconds, queries = run_job()
        _check("job", changed, expected)
        job_times.append(seconds)
        query_counts.append(queries)
        restore()
        changed, seconds = run_raw_sql()
        _check("plain SQL", changed, expected)
        raw_times.append(seconds)
        restore()
        changed, seconds = run_raw_sql(with_audit=True)
        _check("plain SQL with audit logs", changed, expected)
        audit_times.append(seconds)
        restore()
    sql.flush(Group, get_user_model())

    job_seconds = statistics.median(job_times)
    raw_seconds = statistics.median(raw_times)
    return {
        "statuses.groups": groups,
        "statuses.transitions": expected,
        "statuses.seconds": round(job_seconds, 4),
        "statuses.queries": max(query_counts),
        "statuses.groups_at_10x": groups * 10,
        "statuses.seconds_at_10x": round(seconds_10x, 4),
        "statuses.queries_at_10x": queries_10x,
        "statuses.raw_sql_seconds": round(raw_seconds, 4),
        "statuses.raw_sql_with_audit_seconds": round(statistics.median(audit_times), 4),
        # SPEC §8: plain SQL doing the same writes as the job (the UPDATEs and their audit rows).
        "statuses.raw_same_work_seconds": round(statistics.median(audit_times), 4),
        "statuses.ratio_to_raw_sql": round(job_seconds / raw_seconds, 2),
    }


def _check(what: str, changed: int, expected: int) -> None:
    if changed != expected:
        raise RuntimeError(f"statuses: {what} changed {changed} groups, expected {expected}")
