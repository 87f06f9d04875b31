"""``manage.py seed_demo_data``: realistic, reproducible demo data (SPEC §1).

Reproducible: every random choice comes from ``random.Random(--seed)``; only
"now" is the real current time, and every timestamp is an offset from it, so
the same seed gives the same users, groups, amounts and relative times.

What it creates (defaults: 200 groups, 100,000 audit logs):

* users ``demo-<name><n>`` (about 10% without an email address, unusable
  passwords: they are not meant to log in);
* groups in every status. PENDING ones have member counts around
  ``min_members`` and a contract or not, so some are ready for the hourly
  job to activate; ACTIVE ones have completed rounds behind them and an open
  current round, a few have all rounds completed (ready to complete);
  COMPLETED ones are finished;
* weekly rounds and CONFIRMED / PENDING / FAILED contributions spread over
  the groups' lifetimes, so last week's summaries have something to say;
* audit logs over the last 365 days, about a third older than 90 days (the
  default retention), so the archive job has work.

Existing demo data (users named ``demo-...``) makes the command refuse with
an error, unless ``--force`` (delete the previous demo data first, then
seed) or ``--if-empty`` (do nothing and succeed, for ``make run``). Data that
is not demo data is never touched.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog
from audit.services import NewAuditLog, bulk_create_audit_logs
from contributions.models import Contribution, WeeklySummary
from groups.models import Group, Membership, Round

USERNAME_PREFIX = "demo-"
#: ``metadata["source"]`` of the demo audit logs, so ``--force`` can find them.
AUDIT_SOURCE = "seed_demo_data"
#: Rows per INSERT batch (Django lowers it to SQLite's parameter limit).
BATCH_SIZE = 5000
#: Audit logs per batch of random draws (the draws, hence the data, depend on it).
AUDIT_DRAW_BATCH = 1000
#: The most audit logs one run creates (about 4 GB of SQLite); more is a usage error (exit 2).
MAX_AUDIT_LOGS = 10_000_000
#: Exit status of a usage error (a bad argument), as for argparse's own errors.
EXIT_USAGE = 2
#: Share of audit logs older than the default 90-day retention.
OLD_AUDIT_SHARE = 1 / 3

FIRST_NAMES = (
    "Amina", "Ben", "Chloe", "Daniel", "Esi", "Fatima", "George", "Hana", "Ibrahim", "Julia", "Kofi", "Lena",
    "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tariq", "Uma", "Victor", "Wanjiru", "Yusuf",
)
LAST_NAMES = (
    "Adeyemi", "Baker", "Costa", "Dubois", "Eriksen", "Fernandes", "Garcia", "Hoffmann", "Ito", "Jensen",
    "Kamau", "Lopez", "Mensah", "Novak", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Wright",
)
GROUP_WORDS = (
    ("Harbour", "Sunrise", "Riverside", "Market Street", "Hilltop", "Lakeside", "Maple", "Unity", "Harvest",
     "Northgate", "Cedar", "Bright Future"),
    ("Savers", "Circle", "Savings Club", "Chama", "Tontine", "Collective", "Fund", "Pool"),
)
CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "KES", "GBP")
AMOUNTS = ("10.00", "20.00", "25.00", "50.00", "50.00", "75.00", "100.00", "150.00", "200.00")
#: (action, weight, entity type or "" for none)
AUDIT_ACTIONS = (
    ("USER_LOGIN", 40, "user"),
    ("USER_LOGOUT", 14, "user"),
    ("CONTRIBUTION_CREATED", 12, "contribution"),
    ("CONTRIBUTION_CONFIRMED", 10, "contribution"),
    ("CONTRIBUTION_FAILED", 3, "contribution"),
    ("GROUP_JOINED", 5, "group"),
    ("GROUP_LEFT", 1, "group"),
    ("PROFILE_UPDATED", 6, "user"),
    ("PASSWORD_CHANGED", 3, "user"),
    ("GROUP_CREATED", 2, "group"),
    ("PAYOUT_SENT", 2, "group"),
    ("GROUP_STATUS_CHANGED", 2, "group"),
)

#: Group kinds and their weights: (status, kind).
GROUP_KINDS = (
    ((Group.Status.PENDING, "pending"), 25),
    ((Group.Status.ACTIVE, "active"), 52),
    ((Group.Status.ACTIVE, "active_all_rounds_done"), 5),
    # Stalled: the current round opened over 30 days ago and nobody has paid.
    ((Group.Status.ACTIVE, "active_stalled"), 4),
    ((Group.Status.COMPLETED, "completed"), 18),
)


class Command(BaseCommand):
    help = (
        "Create realistic demo data: users (some without email), groups in every status with members, "
        "rounds and contributions, and audit logs over the last year. Reproducible with --seed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--groups", type=int, default=200, help="Number of groups, 0 or more (default 200).")
        parser.add_argument("--audit-logs", type=int, default=100_000,
                            help=f"Number of audit logs, 0 to {MAX_AUDIT_LOGS:,} (default 100,000).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        existing = parser.add_mutually_exclusive_group()
        existing.add_argument("--force", action="store_true",
                              help="Delete existing demo data first, then seed.")
        existing.add_argument("--if-empty", action="store_true",
                              help="Do nothing (and succeed) when demo data exists.")

    def handle(self, *args: Any, groups: int, audit_logs: int, seed: int, force: bool, if_empty: bool,
               **options: Any) -> None:
        if groups < 0:
            raise CommandError(f"--groups {groups} is invalid: a number of groups, 0 or more", returncode=EXIT_USAGE)
        if not 0 <= audit_logs <= MAX_AUDIT_LOGS:
            raise CommandError(f"--audit-logs {audit_logs} is invalid: a number from 0 to {MAX_AUDIT_LOGS:,}",
                               returncode=EXIT_USAGE)
        user_model = get_user_model()
        if user_model.objects.filter(username__startswith=USERNAME_PREFIX).exists():
            if if_empty:
                self.stdout.write("Demo data already present; nothing to do (--if-empty).")
                return
            if not force:
                raise CommandError(
                    f"Demo data already exists (users named {USERNAME_PREFIX}...). "
                    "Use --force to replace it, or --if-empty to leave it as it is."
                )
            self.stdout.write("Deleting the previous demo data (--force) ...")
            delete_demo_data()

        started = time.monotonic()
        seeder = Seeder(rng=random.Random(seed), now=timezone.now())
        with transaction.atomic():
            counts = seeder.seed(groups=groups, audit_logs=audit_logs)
        self.stdout.write(self.style.SUCCESS(
            f"Seeded demo data (seed {seed}) in {time.monotonic() - started:.1f}s:"
        ))
        for line in counts:
            self.stdout.write(f"  {line}")


def delete_demo_data() -> None:
    """Delete everything an earlier run created; nothing else (rows are found by the demo markers)."""
    user_model = get_user_model()
    with transaction.atomic():
        demo_users = user_model.objects.filter(username__startswith=USERNAME_PREFIX)
        demo_groups = Group.objects.filter(memberships__user__in=demo_users).values("pk")
        AuditLog.objects.filter(metadata__source=AUDIT_SOURCE).delete()
        ArchivedAuditLog.objects.filter(metadata__source=AUDIT_SOURCE).delete()
        Contribution.objects.filter(group__in=demo_groups).delete()
        WeeklySummary.objects.filter(group__in=demo_groups).delete()
        Round.objects.filter(group__in=demo_groups).delete()
        group_ids = list(demo_groups.distinct().values_list("pk", flat=True))
        Membership.objects.filter(group_id__in=group_ids).delete()
        Group.objects.filter(pk__in=group_ids).delete()
        demo_users.delete()


class Seeder:
    """Builds the demo rows from one random generator and one "now"."""

    def __init__(self, *, rng: random.Random, now: dt.datetime) -> None:
        self.rng = rng
        self.now = now
        self.users: list[Any] = []
        self.group_ids: list[int] = []
        self.counts: Counter[str] = Counter()

    # -- helpers ------------------------------------------------------------

    def days_ago(self, low: float, high: float) -> dt.datetime:
        """A time between ``high`` and ``low`` days before now, to the second."""
        moment = self.now - dt.timedelta(seconds=self.rng.uniform(low * 86400, high * 86400))
        return moment.replace(microsecond=0)

    # -- the whole run ------------------------------------------------------

    def seed(self, *, groups: int, audit_logs: int) -> list[str]:
        """Create everything; return summary lines."""
        plans = [self.plan_group(index) for index in range(groups)]
        # Fewer users than seats: some people are in two groups. At least as
        # many as the largest group (12), so a group never lacks people.
        self.create_users(count=max(20, int(sum(len(p["members"]) for p in plans) * 0.8)))
        created_groups = self.create_groups(plans)
        self.create_audit_logs(audit_logs)
        return self.summary(created_groups, audit_logs)

    # -- users --------------------------------------------------------------

    def create_users(self, *, count: int) -> None:
        user_model = get_user_model()
        users = []
        for n in range(1, count + 1):
            first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
            has_email = self.rng.random() >= 0.10
            users.append(user_model(
                username=f"{USERNAME_PREFIX}{first.lower()}{n:05d}",
                first_name=first,
                last_name=last,
                # example.com is reserved for documentation: these addresses never reach anyone.
                email=f"{first.lower()}.{last.lower()}{n}@example.com" if has_email else "",
                password=UNUSABLE_PASSWORD_PREFIX + "demo",
                date_joined=self.days_ago(30, 500),
            ))
        self.users = user_model.objects.bulk_create(users, batch_size=BATCH_SIZE)

    # -- groups -------------------------------------------------------------

    def plan_group(self, index: int) -> dict[str, Any]:
        """Decide a group's shape (no database access), so users can be sized first."""
        rng = self.rng
        (status, kind), = rng.choices([k for k, _ in GROUP_KINDS], weights=[w for _, w in GROUP_KINDS])
        min_members = rng.randint(3, 8)
        max_members = min_members + rng.randint(0, 4)
        if kind == "pending":
            # Around min_members: some short of it, some enough (ready when deployed).
            size = max(1, min(max_members, min_members + rng.choice((-2, -1, -1, 0, 0, 1))))
        else:
            size = rng.randint(min_members, max_members)
        name = f"{rng.choice(GROUP_WORDS[0])} {rng.choice(GROUP_WORDS[1])} {index + 1:03d}"
        return {
            "status": status,
            "kind": kind,
            "name": name,
            "min_members": min_members,
            "max_members": max_members,
            "amount": Decimal(rng.choice(AMOUNTS)),
            "currency": rng.choice(CURRENCIES),
            "members": list(range(size)),
            "deployed": kind != "pending" or rng.random() < 0.5,
        }

    def create_groups(self, plans: list[dict[str, Any]]) -> list[Group]:
        rng = self.rng
        groups: list[Group] = []
        timing: list[dict[str, Any]] = []
        for plan in plans:
            size = len(plan["members"])
            total_rounds = size
            if plan["kind"] == "pending":
                created = self.days_ago(1, 60)
                activated = completed = None
                done_rounds = 0
                round_done_at: list[dt.datetime] = []
            else:
                if plan["kind"] in ("active", "active_stalled"):
                    done_rounds = rng.randint(1, total_rounds - 1) if total_rounds > 1 else 0
                else:
                    done_rounds = total_rounds
                age_days = 7 * done_rounds + rng.uniform(1, 6)
                if plan["kind"] == "active_stalled":
                    age_days += rng.uniform(35, 60)
                if plan["kind"] == "completed":
                    age_days += rng.uniform(7, 180)
                activated = self.days_ago(age_days, age_days)
                created = activated - dt.timedelta(days=rng.randint(3, 30))
                # Each finished round completes a few hours after its due date
                # (never in the future); a COMPLETED group completes when its
                # last round has, within the hour of the hourly status job.
                round_done_at = [
                    min(activated + dt.timedelta(days=7 * number, hours=rng.uniform(1, 24)), self.now)
                    for number in range(1, done_rounds + 1)
                ]
                completed = (
                    min(round_done_at[-1] + dt.timedelta(minutes=rng.uniform(1, 60)), self.now)
                    if plan["kind"] == "completed" else None
                )
            deployed_at = created + dt.timedelta(days=rng.uniform(0.5, 3)) if plan["deployed"] else None
            if deployed_at and activated and deployed_at > activated:
                deployed_at = activated - dt.timedelta(hours=1)
            groups.append(Group(
                name=plan["name"],
                status=plan["status"],
                min_members=plan["min_members"],
                max_members=plan["max_members"],
                contribution_amount=plan["amount"],
                currency=plan["currency"],
                total_rounds=total_rounds,
                contract_address=f"0x{rng.getrandbits(160):040x}" if plan["deployed"] else None,
                contract_deployed_at=deployed_at,
                created_at=created,
                activated_at=activated,
                completed_at=completed,
            ))
            timing.append({"done_rounds": done_rounds, "activated": activated, "created": created,
                           "round_done_at": round_done_at, "stalled": plan["kind"] == "active_stalled"})
        groups = Group.objects.bulk_create(groups, batch_size=BATCH_SIZE)

        memberships: list[Membership] = []
        member_slots: list[list[int]] = []
        for group, plan, times in zip(groups, plans, timing, strict=True):
            chosen = rng.sample(range(len(self.users)), k=len(plan["members"]))
            slots = []
            for position, user_index in enumerate(chosen, start=1):
                # Joined 1 to 48 hours after the group was created, and not
                # after now (a PENDING group can be a day old).
                joined_room = (self.now - times["created"]).total_seconds() / 3600
                joined = times["created"] + dt.timedelta(hours=rng.uniform(min(1, joined_room), min(48, joined_room)))
                # A few members of PENDING groups left again (they no longer
                # count): half a day to 5 days after joining, and not after now.
                left = None
                if plan["kind"] == "pending" and rng.random() < 0.1:
                    left_room = (self.now - joined).total_seconds() / 86400
                    left = joined + dt.timedelta(days=rng.uniform(min(0.5, left_room), min(5, left_room)))
                slots.append(len(memberships))
                memberships.append(Membership(
                    group=group, user=self.users[user_index], payout_position=position, joined_at=joined, left_at=left,
                ))
            member_slots.append(slots)
        memberships = Membership.objects.bulk_create(memberships, batch_size=BATCH_SIZE)

        rounds: list[Round] = []
        round_plan: list[tuple[Group, dict[str, Any], list[Membership], int]] = []
        for group, times, slots in zip(groups, timing, member_slots, strict=True):
            members = [memberships[i] for i in slots]
            if times["activated"] is None:
                continue
            for number in range(1, group.total_rounds + 1):
                due = times["activated"] + dt.timedelta(days=7 * number)
                is_done = number <= times["done_rounds"]
                rounds.append(Round(
                    group=group,
                    number=number,
                    recipient=members[number - 1],
                    due_date=due.date(),
                    status=Round.Status.COMPLETED if is_done else Round.Status.OPEN,
                    completed_at=times["round_done_at"][number - 1] if is_done else None,
                ))
                round_plan.append((group, times, members, number))
        rounds = Round.objects.bulk_create(rounds, batch_size=BATCH_SIZE)

        contributions: list[Contribution] = []
        for round_, (group, times, members, number) in zip(rounds, round_plan, strict=True):
            due = times["activated"] + dt.timedelta(days=7 * number)
            opens = due - dt.timedelta(days=7)
            if round_.status == Round.Status.COMPLETED:
                for member in members:
                    contributions.extend(self.completed_round_payments(group, round_, member, opens, due))
            elif number == times["done_rounds"] + 1 and not times["stalled"]:
                # The current round: a realistic mix of paid, partly paid, pending, failed and nothing yet.
                for member in members:
                    contributions.extend(self.current_round_payments(group, round_, member, opens))
        Contribution.objects.bulk_create(contributions, batch_size=BATCH_SIZE)
        self.group_ids = [group.pk for group in groups]
        self.counts.update({
            "memberships": len(memberships),
            "rounds": len(rounds),
            "open rounds": sum(1 for r in rounds if r.status == Round.Status.OPEN),
            "contributions": len(contributions),
        })
        self.counts.update(f"contributions {c.status}" for c in contributions)
        return groups

    def completed_round_payments(self, group: Group, round_: Round, member: Membership,
                                 opens: dt.datetime, due: dt.datetime) -> list[Contribution]:
        rng = self.rng
        payments = []
        confirmed = opens + dt.timedelta(seconds=rng.uniform(3600, (due - opens).total_seconds() - 3600))
        if rng.random() < 0.06:
            failed = confirmed - dt.timedelta(hours=rng.uniform(2, 30))
            payments.append(Contribution(group=group, membership=member, round=round_, amount=group.contribution_amount,
                                         status=Contribution.Status.FAILED, created_at=failed))
        payments.append(Contribution(
            group=group, membership=member, round=round_, amount=group.contribution_amount,
            status=Contribution.Status.CONFIRMED, created_at=confirmed - dt.timedelta(minutes=rng.uniform(1, 90)),
            confirmed_at=confirmed,
        ))
        return payments

    def current_round_payments(self, group: Group, round_: Round, member: Membership,
                               opens: dt.datetime) -> list[Contribution]:
        rng = self.rng
        span = max((self.now - opens).total_seconds(), 3600)
        moment = opens + dt.timedelta(seconds=rng.uniform(0, span))
        outcome = rng.choices(("paid", "partial", "pending", "failed", "nothing"), weights=(55, 10, 15, 5, 15))[0]
        amount = group.contribution_amount
        if outcome == "nothing":
            return []
        if outcome in ("paid", "partial"):
            if outcome == "partial":
                amount = (amount / 2).quantize(Decimal("0.01"))
            return [Contribution(group=group, membership=member, round=round_, amount=amount,
                                 status=Contribution.Status.CONFIRMED,
                                 created_at=moment - dt.timedelta(minutes=rng.uniform(1, 90)), confirmed_at=moment)]
        status = Contribution.Status.PENDING if outcome == "pending" else Contribution.Status.FAILED
        return [Contribution(group=group, membership=member, round=round_, amount=amount, status=status,
                             created_at=moment)]

    # -- audit logs ---------------------------------------------------------

    def create_audit_logs(self, count: int) -> None:
        """Write ``count`` audit logs through ``audit``'s bulk service (``COPY`` or multi-row INSERTs)."""
        bulk_create_audit_logs(self.audit_rows(count))

    def audit_rows(self, count: int) -> Iterator[NewAuditLog]:
        """Yield ``count`` demo audit logs, drawn ``AUDIT_DRAW_BATCH`` actions at a time."""
        rng = self.rng
        actions = [a for a, _, _ in AUDIT_ACTIONS]
        weights = [w for _, w, _ in AUDIT_ACTIONS]
        entity_of = {a: e for a, _, e in AUDIT_ACTIONS}
        details_of = {a: a.replace("_", " ").capitalize() for a in actions}
        metadata_of = {
            client: {"source": AUDIT_SOURCE, "client": client} for client in ("web", "android", "ios", "system")
        }
        clients = list(metadata_of)
        user_ids = [user.pk for user in self.users]
        old_before = self.now - dt.timedelta(days=90)
        for first in range(0, count, AUDIT_DRAW_BATCH):
            for action in rng.choices(actions, weights, k=min(AUDIT_DRAW_BATCH, count - first)):
                created = self.days_ago(90, 365) if rng.random() < OLD_AUDIT_SHARE else self.days_ago(0, 90)
                if created < old_before:
                    self.counts["old audit logs"] += 1
                system = action in ("GROUP_STATUS_CHANGED", "PAYOUT_SENT")
                user_id = None if system or not user_ids else rng.choice(user_ids)
                entity_type = entity_of[action]
                if entity_type == "user":
                    entity_id = str(user_id) if user_id else ""
                elif entity_type == "group" and self.group_ids:
                    entity_id = str(rng.choice(self.group_ids))
                else:
                    entity_id = str(rng.randint(1, 50_000))
                yield NewAuditLog(action, user_id, details_of[action], metadata_of[rng.choice(clients)], entity_type,
                                  entity_id, created)

    # -- report -------------------------------------------------------------

    def summary(self, groups: list[Group], audit_logs: int) -> list[str]:
        statuses = Counter(group.status for group in groups)
        without_email = sum(1 for user in self.users if not user.email)
        counts = self.counts
        return [
            f"users: {len(self.users)} ({without_email} without email)",
            "groups: {} ({})".format(len(groups), ", ".join(
                f"{statuses.get(status, 0)} {status}" for status in Group.Status.values)),
            f"memberships: {counts['memberships']}",
            f"rounds: {counts['rounds']} ({counts['open rounds']} open)",
            "contributions: {} ({})".format(counts["contributions"], ", ".join(
                f"{counts['contributions ' + status]} {status}" for status in Contribution.Status.values)),
            f"audit logs: {audit_logs} ({counts['old audit logs']} older than 90 days)",
        ]
