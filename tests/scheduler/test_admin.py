"""The admin as the operator's console: runs, locks, schedules (SPEC §1, §6)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditLog
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_pages_render(operator, job_redis):
    JobRun.objects.create(job="archive-audit-logs", trigger="manual", status="SUCCEEDED", attempts=1,
                          started_at=timezone.now(), task_id="archive-audit-logs:manual:abc")
    for name, heading in (
        ("admin:index", "Site administration"),
        ("admin:scheduler_app_jobrun_changelist", "Select job run to view"),
        ("admin:scheduler_app_jobrun_locks", "Job locks"),
        ("admin:django_celery_beat_periodictask_changelist", "Select periodic task to change"),
        ("admin:audit_auditlog_changelist", "Select audit log to view"),
        ("admin:audit_archivedauditlog_changelist", "Select archived audit log to view"),
        ("admin:groups_group_changelist", "Select group to change"),
        ("admin:contributions_contribution_changelist", "Select contribution to change"),
    ):
        response = operator.get(reverse(name))
        assert response.status_code == 200, name
        assert f"<h1>{heading}</h1>" in response.content.decode(), name
    # and the run history lists the run
    assert "archive-audit-logs" in operator.get(reverse("admin:scheduler_app_jobrun_changelist")).content.decode()


def test_job_runs_are_read_only(operator):
    run = JobRun.objects.create(job="archive-audit-logs", trigger="manual", status="SUCCEEDED", attempts=1,
                                started_at=timezone.now(), task_id="archive-audit-logs:manual:abc")
    assert operator.get(reverse("admin:scheduler_app_jobrun_add")).status_code == 403
    delete_url = reverse("admin:scheduler_app_jobrun_delete", args=[run.pk])
    assert operator.post(delete_url, {"post": "yes"}).status_code == 403
    assert JobRun.objects.filter(pk=run.pk).exists()


def test_locks_page_shows_the_holder_and_clears_it_into_the_audit_log(operator, job_redis):
    spec = get_spec("update-group-statuses")
    died = timezone.now() - dt.timedelta(minutes=2)
    run = JobRun.objects.create(job=spec.name, trigger="beat", status="RUNNING", attempts=1, started_at=died,
                                heartbeat_at=died, task_id="update-group-statuses:20261130T100000Z:feed")
    # a stale lock: its run's worker died 2 minutes ago (its last heartbeat), so 180 s of its 300 s TTL are left
    job_redis.set(spec.lock_key, run.task_id, px=180_000)
    page = operator.get(reverse("admin:scheduler_app_jobrun_locks")).content.decode()
    assert f"run {run.pk} until " in page
    response = operator.post(reverse("admin:scheduler_app_jobrun_locks"), {"job": spec.name})
    assert (response.status_code, response["Location"]) == (302, reverse("admin:scheduler_app_jobrun_locks"))
    assert job_redis.get(spec.lock_key) is None
    entry = AuditLog.objects.get(action="JOB_LOCK_CLEARED")
    assert entry.user is not None and entry.user.username == "op" and entry.entity_id == spec.name


def test_staff_without_superuser_cannot_clear_locks(client, job_redis):
    from django.contrib.auth.models import Permission

    staff = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_jobrun"))
    client.force_login(staff)
    spec = get_spec("archive-audit-logs")
    run = JobRun.objects.create(job=spec.name, trigger="manual", status="RUNNING", attempts=1,
                                started_at=timezone.now(), task_id="archive-audit-logs:manual:beef")
    job_redis.set(spec.lock_key, run.task_id, px=600_000)
    client.post(reverse("admin:scheduler_app_jobrun_changelist"),
                {"action": "clear_locks_of_selected_jobs", "_selected_action": [run.pk]})
    client.post(reverse("admin:scheduler_app_jobrun_locks"), {"job": spec.name})
    assert job_redis.get(spec.lock_key) == run.task_id
    assert not AuditLog.objects.filter(action="JOB_LOCK_CLEARED").exists()
