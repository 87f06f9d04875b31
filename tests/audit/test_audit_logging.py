"""create_audit_log and log_entity_events (SPEC §4)."""

from __future__ import annotations

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from audit.services import create_audit_log, log_entity_events
from tests.factories import at, make_user

pytestmark = pytest.mark.django_db

NOW = at("2026-11-30 09:00:00")


@time_machine.travel(NOW, tick=False)
def test_create_audit_log_stores_every_field():
    # given
    user = make_user()

    # when
    log = create_audit_log(action="USER_LOGIN", user=user, details="Logged in", metadata={"ip_prefix": "10.0"},
                           entity_type="user", entity_id=user.pk)

    # then: the entity id is stored as text and created_at is now
    log = AuditLog.objects.get(pk=log.pk)
    assert (log.action, log.user_id, log.details, log.metadata, log.entity_type, log.entity_id, log.created_at) == (
        "USER_LOGIN", user.pk, "Logged in", {"ip_prefix": "10.0"}, "user", str(user.pk), NOW,
    )


def test_create_audit_log_defaults_to_a_system_event():
    # when
    log = create_audit_log(action="SYSTEM_START")

    # then
    log.refresh_from_db()
    assert (log.user_id, log.details, log.metadata, log.entity_type, log.entity_id) == (None, "", {}, "", "")


def test_create_audit_log_requires_an_action():
    with pytest.raises(ValueError):
        create_audit_log(action="")


def test_log_entity_events_writes_one_row_per_entity_in_one_query():
    # given
    ids = list(range(1, 301))

    # when
    with CaptureQueriesContext(connection) as queries:
        written = log_entity_events(action="GROUP_STATUS_CHANGED", entity_type="group", entity_ids=ids,
                                    details="PENDING -> ACTIVE", metadata={"new_status": "ACTIVE"},
                                    created_at=NOW)

    # then
    assert written == 300
    assert len(queries.captured_queries) == 1
    rows = AuditLog.objects.order_by("entity_id")
    assert sorted(int(entity_id) for entity_id in rows.values_list("entity_id", flat=True)) == ids
    row = AuditLog.objects.get(entity_id="42")
    assert (row.action, row.user_id, row.details, row.metadata, row.entity_type, row.created_at) == (
        "GROUP_STATUS_CHANGED", None, "PENDING -> ACTIVE", {"new_status": "ACTIVE"}, "group", NOW,
    )


def test_log_entity_events_without_ids_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert log_entity_events(action="X", entity_type="group", entity_ids=[]) == 0
