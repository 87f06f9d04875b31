"""The "Scheduled jobs" dashboard, Run now, "Run selected tasks" and the run list (issue 9)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app.jobs import get_spec
from scheduler_app.locks import default_backend
from scheduler_app.models import JobRun
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_user("op", "op@example.com", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_dashboard", "run_job", "view_jobrun",
                                                                        "view_periodictask", "change_periodictask"]))
    client.force_login(user)
    return client


@pytest.fixture
def noop_task():
    cron = CrontabSchedule.objects.create(minute="0", hour="9", day_of_month="*", month_of_year="*",
                                          day_of_week="1", timezone="Europe/Berlin")
    return PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, crontab=cron)


def texts(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def test_dashboard_needs_its_permission(client, job_redis):
    staff = get_user_model().objects.create_user("s", "s@example.com", "pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/scheduler/dashboard/").status_code == 403
    assert "Scheduled jobs" not in client.get("/admin/").content.decode()


def test_dashboard_shows_each_job(operator, noop_task, job_redis):
    JobRun.objects.create(job="test-noop", trigger="manual", status="SUCCEEDED", attempts=1,
                          started_at="2026-11-30T01:00:00Z", finished_at="2026-11-30T01:00:02Z", duration_ms=2000,
                          items_processed=7, task_id="t-1", worker="h:1")
    assert 'href="/admin/scheduler/dashboard/"' in operator.get("/admin/").content.decode()
    page = operator.get("/admin/scheduler/dashboard/").content.decode()
    assert "At 09:00, only on Monday (0 9 * * 1)" in page
    assert "time zone: Europe/Berlin" in page
    assert "<svg" in page and "SUCCEEDED, 2000 ms, 2026-11-30 01:00:00 UTC" in page
    assert "success 100% of 1; p50 2.00 s, p95 2.00 s" in page
    assert "?job__exact=test-noop" in page
    assert 'value="Run now"' in page


def test_run_now_reports_started_with_a_link(operator, noop_task, worker, job_redis):
    response = operator.post("/admin/scheduler/dashboard/run/", {"job": "test-noop"})
    assert response.status_code == 302
    (level, text), = texts(response)
    run = JobRun.objects.get(job="test-noop")
    assert level == "success"
    assert f"test-noop started: run {run.pk}" in text and f"/admin/scheduler_app/jobrun/{run.pk}/change/" in text
    wait_for(lambda: JobRun.objects.get(pk=run.pk).status == "SUCCEEDED", 30)


def test_run_now_with_the_lock_held_is_a_warning_naming_the_holder(operator, noop_task, worker, job_redis):
    spec = get_spec("test-noop")
    default_backend().raise_or_lock(spec.lock_key, 30, token="test-noop:manual:" + "a" * 32)
    response = operator.post("/admin/scheduler/dashboard/run/", {"job": "test-noop"})
    (level, text), = texts(response)
    assert level == "warning"
    assert "test-noop skipped: lock held by task test-noop:manual:aaaa" in text and " until " in text
    skipped = JobRun.objects.get(job="test-noop", status="SKIPPED")
    assert skipped.worker.startswith("admin user op (")  # the sender, not a worker

    # and django-celery-beat's "Run selected tasks" says the same, never a green success
    operator.get("/admin/")  # shows (and so consumes) the first message
    response = operator.post("/admin/django_celery_beat/periodictask/",
                             {"action": "run_tasks", "_selected_action": [noop_task.pk]})
    assert [level for level, _ in texts(response)] == ["warning"]


def test_running_a_disabled_task_asks_first(operator, noop_task, worker, job_redis):
    PeriodicTask.objects.filter(pk=noop_task.pk).update(enabled=False)
    page = operator.post("/admin/scheduler/dashboard/run/", {"job": "test-noop"})
    assert page.status_code == 200 and "disabled" in page.content.decode()
    assert not JobRun.objects.exists()
    response = operator.post("/admin/scheduler/dashboard/run/", {"job": "test-noop", "confirm": "yes"})
    assert [level for level, _ in texts(response)] == ["success"]
    # the periodic task action too
    wait_for(lambda: not JobRun.objects.filter(status="RUNNING").exists(), 30)
    page = operator.post("/admin/django_celery_beat/periodictask/",
                         {"action": "run_tasks", "_selected_action": [noop_task.pk]})
    assert page.status_code == 200 and 'name="confirm" value="yes"' in page.content.decode()


def test_run_list_badges_and_items_so_far(operator, job_redis):
    JobRun.objects.create(job="test-noop", trigger="manual", status="RUNNING", attempts=1, dry_run=True,
                          started_at="2026-11-30T01:00:05Z", items_processed=42, progress="3/10 batches",
                          task_id="t-2", worker="h:1")
    page = operator.get("/admin/scheduler_app/jobrun/").content.decode()
    assert ">RUNNING</span>" in page and "DRY RUN" in page
    assert "42 so far (3/10 batches)" in page
    assert "2026-11-30 01:00:05" in page
