"""Admin: the audit log list page (first page, default ordering) at millions of rows, for a staff user (SPEC §8).

The rows are the archive section's seed (``bench.archive.seed``: ``rows`` old
ones and a tenth as many recent ones). The page is rendered through Django's
test client (the full middleware, admin and template stack, no network), the
median of several views after one warm-up; the same page with Django's
counting paginator and the full result count is measured as the baseline.
"""

from __future__ import annotations

import statistics
import time

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.test import Client

from audit.admin import AuditLogAdmin
from audit.models import AuditLog
from bench import archive

VIEWS = 5


def _median_ms(client: Client, url: str) -> float:
    client.get(url, HTTP_HOST="localhost")  # warm-up
    samples = []
    for _ in range(VIEWS):
        started = time.perf_counter()
        response = client.get(url, HTTP_HOST="localhost")
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
    return statistics.median(samples)


def run(*, rows: int, log=print) -> dict[str, float | int]:
    log(f"admin: seeding {rows:,} audit logs (+{rows // 10:,})")
    archive.seed(rows)
    total = AuditLog.objects.count()
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={
        "is_staff": True, "is_superuser": True, "email": "bench-admin@example.com"})
    client = Client()
    client.force_login(user)
    url = "/admin/audit/auditlog/"
    fast = _median_ms(client, url)
    log(f"admin: audit log list at {total:,} rows: {fast:.1f} ms")
    paginator, full_count = AuditLogAdmin.paginator, AuditLogAdmin.show_full_result_count
    AuditLogAdmin.paginator, AuditLogAdmin.show_full_result_count = Paginator, True
    try:
        counting = _median_ms(client, url)
    finally:
        AuditLogAdmin.paginator, AuditLogAdmin.show_full_result_count = paginator, full_count
    log(f"admin: with Django's counting paginator and full count: {counting:.1f} ms")
    return {"admin.auditlog_rows": total, "admin.auditlog_changelist_ms": round(fast, 1),
            "admin.auditlog_changelist_ms_counting": round(counting, 1)}
