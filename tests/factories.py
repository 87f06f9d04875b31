"""Plain factory functions for the domain models (audit, groups, contributions).

Each function saves and returns one object with sensible defaults; pass
keyword arguments for what a test cares about. Times default to
``timezone.now()`` (frozen by time-machine in most tests).
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.models import AuditLog
from contributions.models import Contribution
from groups.models import Group, Membership, Round

_sequence = itertools.count(1)

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """``at("2026-11-29 23:59:59")`` -> that time in UTC (aware)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_user(*, username: str | None = None, email: str | None = None, **fields: Any):
    """A user; ``email`` defaults to ``<username>@example.com``; pass ``email=""`` for none."""
    n = next(_sequence)
    username = username or f"user{n}"
    if email is None:
        email = f"{username}@example.com"
    return get_user_model().objects.create(username=username, email=email, **fields)


def make_group(
    *,
    status: str = Group.Status.PENDING,
    min_members: int = 3,
    max_members: int | None = None,
    contribution_amount: Decimal | str = "50.00",
    currency: str = "USD",
    total_rounds: int = 3,
    deployed: bool = False,
    name: str | None = None,
    **fields: Any,
) -> Group:
    """A group; ``deployed=True`` gives it a contract address and deployment time."""
    n = next(_sequence)
    if deployed:
        fields.setdefault("contract_address", f"0x{n:040x}")
        fields.setdefault("contract_deployed_at", timezone.now())
    if status in (Group.Status.ACTIVE, Group.Status.COMPLETED):
        fields.setdefault("activated_at", timezone.now())
    if status == Group.Status.COMPLETED:
        fields.setdefault("completed_at", timezone.now())
    return Group.objects.create(
        name=name or f"Group {n}",
        status=status,
        min_members=min_members,
        max_members=max_members if max_members is not None else max(min_members, total_rounds) + 2,
        contribution_amount=Decimal(contribution_amount),
        currency=currency,
        total_rounds=total_rounds,
        **fields,
    )


def make_member(group: Group, *, user=None, position: int | None = None, left_at: dt.datetime | None = None,
                **user_fields: Any) -> Membership:
    """A membership of ``group``; a new user unless ``user`` is given (``user_fields`` go to :func:`make_user`)."""
    if position is None:
        position = group.memberships.count() + 1
    return Membership.objects.create(
        group=group, user=user or make_user(**user_fields), payout_position=position, left_at=left_at,
    )


def make_members(group: Group, count: int, **kwargs: Any) -> list[Membership]:
    """``count`` active memberships with positions 1..count."""
    return [make_member(group, position=position, **kwargs) for position in range(1, count + 1)]


def make_round(group: Group, *, number: int, recipient: Membership, status: str = Round.Status.OPEN,
               due_date: dt.date | None = None, completed_at: dt.datetime | None = None) -> Round:
    """A round; a COMPLETED one gets ``completed_at`` now unless given."""
    if status == Round.Status.COMPLETED and completed_at is None:
        completed_at = timezone.now()
    return Round.objects.create(
        group=group,
        number=number,
        recipient=recipient,
        status=status,
        due_date=due_date or (timezone.now().date() + dt.timedelta(days=7 * number)),
        completed_at=completed_at,
    )


def make_contribution(membership: Membership, round_: Round, *, amount: Decimal | str | None = None,
                      status: str = Contribution.Status.CONFIRMED,
                      confirmed_at: dt.datetime | None = None, created_at: dt.datetime | None = None) -> Contribution:
    """A contribution; a CONFIRMED one is confirmed now unless ``confirmed_at`` is given."""
    if status == Contribution.Status.CONFIRMED and confirmed_at is None:
        confirmed_at = timezone.now()
    return Contribution.objects.create(
        group_id=membership.group_id,
        membership=membership,
        round=round_,
        amount=Decimal(amount) if amount is not None else membership.group.contribution_amount,
        status=status,
        confirmed_at=confirmed_at,
        created_at=created_at or confirmed_at or timezone.now(),
    )


def make_audit_log(*, created_at: dt.datetime, action: str = "USER_LOGIN", **fields: Any) -> AuditLog:
    """An audit log written at ``created_at``."""
    return AuditLog.objects.create(action=action, created_at=created_at, **fields)


def make_crontab(expression: str, tz: str = "UTC"):
    """The ``CrontabSchedule`` row of a five-field ``expression`` read in ``tz`` (reused when it exists)."""
    from django_celery_beat.models import CrontabSchedule

    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    row, _ = CrontabSchedule.objects.get_or_create(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
        day_of_week=day_of_week, timezone=tz,
    )
    return row
