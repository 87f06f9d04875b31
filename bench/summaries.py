"""Weekly summaries: ``generate_weekly_summaries`` + ``send_summaries_to_members`` with locmem email.

Seeded per group (all ACTIVE): ten members, each a distinct user, one in ten
without an email address; five rounds, 1-3 COMPLETED, 4 (the current one)
and 5 OPEN. Per member: a CONFIRMED contribution to round 3 two weeks before
the summarised week (outside it), and one to round 4 inside the week:
CONFIRMED in full, CONFIRMED for half (so they still owe), or PENDING.

The run is the job's: ``now`` is Monday 2026-11-30 10:00 UTC, so the week is
2026-11-23 to 2026-11-30. Queries are counted with Django's
``CaptureQueriesContext`` at ``groups`` groups and at ten times as many.
"""

from __future__ import annotations

import datetime as dt
import time

from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext, override_settings

from bench import sql
from contributions.models import Contribution, SummaryDelivery, WeeklySummary
from contributions.services import generate_weekly_summaries, send_summaries_to_members
from groups.models import Group, Membership, Round

NOW = dt.datetime(2026, 11, 30, 10, 0, 0, tzinfo=dt.timezone.utc)
WEEK_START = dt.datetime(2026, 11, 23, 0, 0, 0, tzinfo=dt.timezone.utc)
MEMBERS_PER_GROUP = 10
ROUNDS_PER_GROUP = 5
CURRENT_ROUND = 4
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def seed(groups: int) -> tuple[int, int]:
    """Empty the tables and seed ``groups`` ACTIVE groups; return (members, emails expected)."""
    sql.flush(Group, get_user_model())
    members = groups * MEMBERS_PER_GROUP
    p = sql.ts_param()
    user_model = get_user_model()
    sql.insert_series(
        user_model,
        ("password", "is_superuser", "username", "first_name", "last_name", "email", "is_staff", "is_active",
         "date_joined"),
        "'!', %s, 'bench-member-' || i, '', '', "
        "CASE WHEN i %% 10 = 0 THEN '' ELSE 'member' || i || '@example.com' END, %s, %s, " + p,
        members,
        [False, False, True, sql.ts(NOW - dt.timedelta(days=120))],
    )
    first_user = sql.min_id(user_model)
    sql.insert_series(
        Group,
        ("name", "status", "min_members", "max_members", "contribution_amount", "currency", "total_rounds",
         "contract_address", "contract_deployed_at", "created_at", "activated_at"),
        f"'Savings circle ' || i, 'ACTIVE', 3, 12, 50, 'USD', {ROUNDS_PER_GROUP}, '0x' || i, {p}, {p}, {p}",
        groups,
        [sql.ts(NOW - dt.timedelta(days=100)), sql.ts(NOW - dt.timedelta(days=110)), sql.ts(NOW - dt.timedelta(days=90))],
    )
    first_group = sql.min_id(Group)
    m = MEMBERS_PER_GROUP
    sql.insert_series(
        Membership,
        ("group", "user", "payout_position", "joined_at", "left_at"),
        f"%s + (i - 1) / {m}, %s + i - 1, (i - 1) %% {m} + 1, {p}, NULL",
        members,
        [first_group, first_user, sql.ts(NOW - dt.timedelta(days=95))],
    )
    first_membership = sql.min_id(Membership)
    r = ROUNDS_PER_GROUP
    number = f"((i - 1) %% {r} + 1)"
    sql.insert_series(
        Round,
        ("group", "number", "recipient", "due_date", "status", "completed_at"),
        f"%s + (i - 1) / {r}, {number}, %s + ((i - 1) / {r}) * {m} + {number} - 1, %s, "
        f"CASE WHEN {number} < {CURRENT_ROUND} THEN 'COMPLETED' ELSE 'OPEN' END, "
        f"CASE WHEN {number} < {CURRENT_ROUND} THEN {p} ELSE NULL END",
        groups * r,
        [first_group, first_membership, NOW.date(), sql.ts(WEEK_START - dt.timedelta(days=7))],
    )
    first_round = sql.min_id(Round)
    fields = ("group", "membership", "round", "amount", "status", "created_at", "confirmed_at")
    # Membership i belongs to group index k = (i - 1) / m; its group's round n has id first_round + k * r + n - 1.
    group_of = f"((i - 1) / {m})"
    sql.insert_series(
        Contribution, fields,
        f"%s + {group_of}, %s + i - 1, %s + {group_of} * {r} + {CURRENT_ROUND - 2}, 50, 'CONFIRMED', {p}, {p}",
        members,
        [first_group, first_membership, first_round, sql.ts(WEEK_START - dt.timedelta(days=15)),
         sql.ts(WEEK_START - dt.timedelta(days=14))],
    )
    in_week = sql.ts_plus_seconds(f"(CAST(i AS bigint) * 7919) %% {7 * 86400}")
    sql.insert_series(
        Contribution, fields,
        f"%s + {group_of}, %s + i - 1, %s + {group_of} * {r} + {CURRENT_ROUND - 1}, "
        "CASE WHEN i %% 3 = 1 THEN 25 ELSE 50 END, "
        "CASE WHEN i %% 3 = 0 THEN 'PENDING' ELSE 'CONFIRMED' END, "
        f"{sql.ts_plus_seconds(f'(CAST(i AS bigint) * 7919) %% {7 * 86400}')}, "
        f"CASE WHEN i %% 3 = 0 THEN NULL ELSE {in_week} END",
        members,
        [first_group, first_membership, first_round, sql.ts(WEEK_START), sql.ts(WEEK_START)],
    )
    sql.settle(user_model, Group, Membership, Round, Contribution, WeeklySummary, SummaryDelivery)
    return members, members - members // 10


def run_once(expected_emails: int) -> dict[str, float | int]:
    """Generate and send the week's summaries once; return seconds and query counts."""
    with override_settings(EMAIL_BACKEND=LOCMEM):
        mail.outbox = []
        reset_queries()  # CaptureQueriesContext counts in a log capped at 9,000 queries
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            summaries = generate_weekly_summaries(now=NOW)
            generated_at = time.perf_counter()
            generate_queries = len(queries)
            sent = send_summaries_to_members(summaries)
            finished = time.perf_counter()
        outbox = len(mail.outbox)
        mail.outbox = []
    if sent != expected_emails or outbox != expected_emails:
        raise RuntimeError(f"summaries: sent {sent} emails ({outbox} in the outbox), expected {expected_emails}")
    return {
        "seconds": finished - started,
        "generate_seconds": generated_at - started,
        "queries": len(queries),
        "generate_queries": generate_queries,
        "summaries": len(summaries),
    }


def run(*, groups: int, log=print) -> dict[str, float | int]:
    """Measure at ``groups`` and at ten times as many; return the ``summaries.*`` keys."""
    log(f"summaries: seeding {groups:,} groups x {MEMBERS_PER_GROUP} members")
    members, emails = seed(groups)
    base = run_once(emails)
    log(f"summaries: seeding {groups * 10:,} groups x {MEMBERS_PER_GROUP} members")
    members_10x, emails_10x = seed(groups * 10)
    at_10x = run_once(emails_10x)
    sql.flush(Group, get_user_model())
    return {
        "summaries.groups": groups,
        "summaries.members": members,
        "summaries.emails": emails,
        "summaries.seconds": round(base["seconds"], 3),
        "summaries.emails_per_s": round(emails / base["seconds"]),
        "summaries.queries": base["queries"],
        "summaries.generate_queries": base["generate_queries"],
        "summaries.generate_seconds": round(base["generate_seconds"], 4),
        "summaries.groups_at_10x": groups * 10,
        "summaries.members_at_10x": members_10x,
        "summaries.seconds_at_10x": round(at_10x["seconds"], 3),
        "summaries.queries_at_10x": at_10x["queries"],
        "summaries.generate_queries_at_10x": at_10x["generate_queries"],
    }
