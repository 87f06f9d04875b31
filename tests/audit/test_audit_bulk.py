"""bulk_create_audit_logs: many audit logs at once, for bulk loads such as seed_demo_data (SPEC §1, §4)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from audit.services import BULK_ROWS_PER_INSERT, NewAuditLog, bulk_create_audit_logs
from tests.factories import at, make_user

pytestmark = pytest.mark.django_db


def test_stores_every_field():
    # given
    user = make_user()
    logs = [
        NewAuditLog("USER_LOGIN", user.pk, "Logged in", {"client": "web"}, "user", str(user.pk),
                    at("2026-11-29 23:59:59")),
        NewAuditLog("PAYOUT_SENT", None, "Payout sent", {}, "group", "7", at("2026-11-30 00:00:00")),
    ]

    # when
    written = bulk_create_audit_logs(logs)

    # then
    assert written == 2
    stored = AuditLog.objects.order_by("id").values_list(
        "action", "user_id", "details", "metadata", "entity_type", "entity_id", "created_at")
    assert list(stored) == [
        ("USER_LOGIN", user.pk, "Logged in", {"client": "web"}, "user", str(user.pk), at("2026-11-29 23:59:59")),
        ("PAYOUT_SENT", None, "Payout sent", {}, "group", "7", at("2026-11-30 00:00:00")),
    ]


def test_reads_a_generator_in_batches():
    # given: one log more than an INSERT holds, from a generator
    count = BULK_ROWS_PER_INSERT + 1
    logs = (NewAuditLog("USER_LOGIN", None, "", {"n": n}, "", "", at("2026-11-30 09:00:00")) for n in range(count))

    # when
    with CaptureQueriesContext(connection) as queries:
        written = bulk_create_audit_logs(logs)

    # then
    assert written == AuditLog.objects.count() == count
    if connection.vendor != "postgresql":  # PostgreSQL: one COPY
        assert len(queries) == 2


def test_an_empty_action_is_refused():
    with pytest.raises(ValueError, match="action"):
        bulk_create_audit_logs([NewAuditLog("", None, "", {}, "", "", at("2026-11-30 09:00:00"))])
