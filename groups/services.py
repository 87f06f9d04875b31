"""Group status transitions (SPEC §5 "Group statuses").

Public functions:

* :func:`update_group_statuses` - PENDING -> ACTIVE and ACTIVE -> COMPLETED
  for every group that qualifies, with one audit log per change.

The inactive-group check reads contributions, so it lives in
:func:`contributions.services.check_inactive_groups` (``contributions`` may
import ``groups``, not the reverse).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from django.db import connections, router, transaction
from django.db.models import Count, F, Field, Model, OuterRef, QuerySet, Subquery
from django.utils import timezone

from audit.services import log_entity_events
from groups.models import Group, Membership, Round

logger = logging.getLogger("groups")

#: The audit action written for every status change (SPEC §5).
STATUS_CHANGED_ACTION = "GROUP_STATUS_CHANGED"


def _column(model: type[Model], name: str) -> str:
    """The database column of ``model``'s concrete field ``name`` (narrowed for the type checker)."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a field with a database column")
    return field.column


@dataclasses.dataclass(frozen=True)
class _Transition:
    old: str
    new: str
    #: The timestamp column set to ``now`` by the transition.
    stamp_field: str

    @property
    def details(self) -> str:
        return f"{self.old} -> {self.new}"


ACTIVATE = _Transition(Group.Status.PENDING, Group.Status.ACTIVE, "activated_at")
COMPLETE = _Transition(Group.Status.ACTIVE, Group.Status.COMPLETED, "completed_at")


def groups_ready_to_activate() -> QuerySet[Group]:
    """PENDING groups with a deployed contract and at least ``min_members`` active members (SPEC §5).

    A member counts while ``left_at`` is null. One query, whatever the number
    of groups: the member count is a correlated subquery, not a Python loop.
    """
    active_members = (
        Membership.objects.filter(group=OuterRef("pk"), left_at__isnull=True)
        .order_by()
        .values("group")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Group.objects.filter(status=Group.Status.PENDING, contract_address__isnull=False)
        .exclude(contract_address="")
        # A group with no active member gets NULL here, and NULL >= n is false.
        .alias(active_members=Subquery(active_members))
        .filter(active_members__gte=F("min_members"))
    )


def groups_ready_to_complete() -> QuerySet[Group]:
    """ACTIVE groups whose rounds 1..total_rounds are all COMPLETED (SPEC §5). One query."""
    completed_rounds = (
        Round.objects.filter(group=OuterRef("pk"), status=Round.Status.COMPLETED, number__lte=OuterRef("total_rounds"))
        .order_by()
        .values("group")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Group.objects.filter(status=Group.Status.ACTIVE)
        .alias(completed_rounds=Subquery(completed_rounds))
        .filter(completed_rounds__gte=F("total_rounds"))
    )


def update_group_statuses(*, now: dt.datetime | None = None, dry_run: bool = False) -> int:
    """Move every qualifying group one status forward (SPEC §5 "Group statuses").

    Transitions, applied in this order so a group changes at most once a run:

    1. ACTIVE -> COMPLETED when rounds 1..total_rounds are all COMPLETED;
       sets ``completed_at = now``.
    2. PENDING -> ACTIVE when the contract is deployed (``contract_address``
       set) and active members (``left_at`` null) >= ``min_members``; sets
       ``activated_at = now``. A group activated now completes in a later run.

    COMPLETED groups never change. Each transition is one transaction with two
    statements whatever the number of groups: a set-based
    ``UPDATE ... WHERE status = <old> AND id IN (<candidates>) RETURNING id``
    and one INSERT of a ``GROUP_STATUS_CHANGED`` audit log (``details`` e.g.
    ``PENDING -> ACTIVE``, entity ``group``/id) per returned id. Because the
    UPDATE is guarded by the old status and the audit logs are written only
    for the ids it returned, two concurrent runs never change a group twice
    nor log one change twice: on PostgreSQL the second UPDATE waits for the
    first's row locks and then re-checks ``status``; on SQLite writers are
    serialised. Needs SQLite >= 3.35 (RETURNING).

    Args:
        now: aware datetime stored in ``activated_at``/``completed_at`` and the
            audit logs; defaults to ``timezone.now()``.
        dry_run: count the groups that would change and change nothing.

    Returns:
        The number of groups whose status changed (in a dry run: would change).

    Raises:
        ValueError: ``now`` is naive.
    """
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")

    if dry_run:
        completed = groups_ready_to_complete().count()
        activated = groups_ready_to_activate().count()
        logger.info(
            "Dry run: would update %d group statuses (%d PENDING -> ACTIVE, %d ACTIVE -> COMPLETED)",
            activated + completed, activated, completed,
        )
        return activated + completed

    completed = len(_apply(COMPLETE, groups_ready_to_complete(), now=now))
    activated = len(_apply(ACTIVATE, groups_ready_to_activate(), now=now))
    logger.info(
        "Updated %d group statuses (%d PENDING -> ACTIVE, %d ACTIVE -> COMPLETED)",
        activated + completed, activated, completed,
    )
    return activated + completed


def _apply(transition: _Transition, candidates: QuerySet[Group], *, now: dt.datetime) -> list[int]:
    """Run one transition over ``candidates``; return the ids it changed, with their audit logs written."""
    alias = router.db_for_write(Group)
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = Group._meta
    # The candidates' SELECT, compiled by the ORM, becomes the UPDATE's subquery.
    candidate_sql, candidate_params = candidates.order_by().values("pk").query.get_compiler(using=alias).as_sql()
    status = quote(_column(Group, "status"))
    stamp = quote(_column(Group, transition.stamp_field))
    pk = quote(_column(Group, meta.pk.name))
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {status} = %s, {stamp} = %s "
        f"WHERE {status} = %s AND {pk} IN ({candidate_sql}) RETURNING {pk}"
    )
    params = [transition.new, connection.ops.adapt_datetimefield_value(now), transition.old, *candidate_params]
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            changed = sorted(row[0] for row in cursor.fetchall())
        log_entity_events(
            action=STATUS_CHANGED_ACTION,
            entity_type="group",
            entity_ids=changed,
            details=transition.details,
            metadata={"old_status": transition.old, "new_status": transition.new},
            created_at=now,
        )
    return changed

