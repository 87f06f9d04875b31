"""The audit log admin lists never count the whole table (issue 9)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from scheduler_app import paginators

pytestmark = pytest.mark.django_db


def test_list_counts_at_most_the_cap_and_orders_by_the_primary_key(client, monkeypatch):
    monkeypatch.setattr(paginators, "COUNT_CAP", 20)
    AuditLog.objects.bulk_create([AuditLog(action="USER_LOGIN", details=f"login {i}") for i in range(50)])
    if connection.vendor == "postgresql":  # the estimate reads pg_class.reltuples, which ANALYZE keeps current
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_auditlog")
    client.force_login(get_user_model().objects.create_superuser("a", "a@example.com", "pw"))
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/admin/audit/auditlog/")
    assert response.status_code == 200
    sql = [q["sql"] for q in queries.captured_queries if "audit_auditlog" in q["sql"]]
    counts = [s for s in sql if "COUNT(" in s.upper()]
    assert counts and all("LIMIT 21" in s for s in counts), counts  # capped, never the whole table
    assert any('ORDER BY "audit_auditlog"."id" DESC' in s for s in sql), sql
    # past the cap, the unfiltered count is estimated (MAX(id) on SQLite, reltuples on PostgreSQL): all 50
    assert "50 audit logs" in response.content.decode()
