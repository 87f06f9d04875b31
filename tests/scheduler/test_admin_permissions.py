"""Who may see and clear job locks and run jobs from the admin; run history is read-only for all (issue 11 item 5)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from audit.models import AuditLog
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun

pytestmark = pytest.mark.django_db

SPEC_NAME = "archive-audit-logs"
TASK_ID = "archive-audit-logs:manual:c0ffee"


def login(client, *codenames: str, superuser: bool = False):
    model = get_user_model()
    if superuser:
        user = model.objects.create_superuser("root", "root@example.com", "pw")
    else:
        user = model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


@pytest.fixture
def held_lock(job_redis):
    spec = get_spec(SPEC_NAME)
    stopped = timezone.now() - dt.timedelta(minutes=2)
    run = JobRun.objects.create(job=spec.name, trigger="manual", status="RUNNING", attempts=1,
                                started_at=stopped, heartbeat_at=stopped, task_id=TASK_ID)
    # a stale holder: no worker runs it and its heartbeat stopped 2 minutes ago (200 s of its 600 s TTL
    # left), so a clear goes through without "even if running"
    job_redis.set(spec.lock_key, TASK_ID, px=200_000)
    return spec, run, job_redis


# (permissions, superuser, page status, lock holder shown, clear button shown)
LOCK_PAGE_ROWS = [
    ((), False, 403, False, False),
    (("view_jobrun",), False, 403, False, False),
    (("view_locks",), False, 200, True, False),
    (("view_locks", "clear_lock"), False, 200, True, True),
    ((), True, 200, True, True),
]


@pytest.mark.parametrize(("perms", "superuser", "status", "shows_holder", "shows_clear"), LOCK_PAGE_ROWS)
def test_the_locks_page_needs_view_locks(client, held_lock, perms, superuser, status, shows_holder, shows_clear):
    login(client, *perms, superuser=superuser)

    response = client.get(reverse("admin:scheduler_app_jobrun_locks"))

    assert response.status_code == status
    page = response.content.decode()
    assert (TASK_ID in page) is shows_holder
    assert ("Clear lock" in page) is shows_clear


# (permissions, superuser, lock cleared)
CLEAR_ROWS = [
    (("view_locks",), False, False),
    (("view_jobrun", "view_locks"), False, False),
    (("view_locks", "clear_lock"), False, True),
    ((), True, True),
]


@pytest.mark.parametrize(("perms", "superuser", "cleared"), CLEAR_ROWS)
def test_clearing_from_the_locks_page_needs_clear_lock(client, held_lock, perms, superuser, cleared):
    spec, _run, redis = held_lock
    login(client, *perms, superuser=superuser)

    client.post(reverse("admin:scheduler_app_jobrun_locks"), {"job": spec.name})

    assert (redis.get(spec.lock_key) is None) is cleared
    assert AuditLog.objects.filter(action="JOB_LOCK_CLEARED").exists() is cleared


# (permissions, superuser, action offered and lock cleared)
ACTION_ROWS = [
    (("view_jobrun",), False, False),
    (("view_jobrun", "view_locks"), False, False),
    (("view_jobrun", "clear_lock"), False, True),
    ((), True, True),
]


@pytest.mark.parametrize(("perms", "superuser", "cleared"), ACTION_ROWS)
def test_the_clear_locks_action_needs_clear_lock(client, held_lock, perms, superuser, cleared):
    spec, run, redis = held_lock
    login(client, *perms, superuser=superuser)
    changelist = reverse("admin:scheduler_app_jobrun_changelist")

    offered = "clear_locks_of_selected_jobs" in client.get(changelist).content.decode()
    client.post(changelist, {"action": "clear_locks_of_selected_jobs", "_selected_action": [run.pk]})

    assert offered is cleared
    assert (redis.get(spec.lock_key) is None) is cleared


def test_the_job_locks_link_shows_only_with_view_locks(client):
    login(client, "view_jobrun")
    assert "Job locks" not in client.get(reverse("admin:scheduler_app_jobrun_changelist")).content.decode()
    client.logout()
    get_user_model().objects.all().delete()
    login(client, "view_jobrun", "view_locks")
    assert "Job locks" in client.get(reverse("admin:scheduler_app_jobrun_changelist")).content.decode()


@pytest.mark.parametrize(("perms", "superuser"), [(("view_jobrun", "change_jobrun", "delete_jobrun", "add_jobrun",
                                                   "view_locks", "clear_lock", "run_job"), False), ((), True)])
def test_run_history_is_read_only_for_everyone(client, perms, superuser):
    run = JobRun.objects.create(job=SPEC_NAME, trigger="manual", status="SUCCEEDED", attempts=1,
                                started_at=timezone.now(), task_id=TASK_ID)
    login(client, *perms, superuser=superuser)

    added = client.post(reverse("admin:scheduler_app_jobrun_add"), {"job": "x"})
    changed = client.post(reverse("admin:scheduler_app_jobrun_change", args=[run.pk]), {"status": "FAILED"})
    deleted = client.post(reverse("admin:scheduler_app_jobrun_delete", args=[run.pk]), {"post": "yes"})

    assert (added.status_code, changed.status_code, deleted.status_code) == (403, 403, 403)
    assert JobRun.objects.get().status == "SUCCEEDED"


# (permissions, superuser, actions offered on the periodic tasks list)
RUN_ACTION_ROWS = [
    (("view_periodictask",), False, set()),
    (("view_periodictask", "run_job"), False, {"run_tasks"}),
    (("view_periodictask", "change_periodictask"), False,
     {"enable_tasks", "disable_tasks", "toggle_tasks", "pause_tasks", "resume_tasks"}),
    ((), True, {"enable_tasks", "disable_tasks", "toggle_tasks", "pause_tasks", "resume_tasks", "run_tasks"}),
]


@pytest.mark.parametrize(("perms", "superuser", "offered"), RUN_ACTION_ROWS)
def test_running_or_changing_schedules_from_the_list_needs_the_permission(client, perms, superuser, offered):
    PeriodicTask.objects.create(name=SPEC_NAME, task="audit.tasks.archive_audit_logs_task",
                                crontab=CrontabSchedule.objects.create(minute="0", hour="2", timezone="UTC"))
    login(client, *perms, superuser=superuser)

    response = client.get(reverse("admin:django_celery_beat_periodictask_changelist"))

    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is left
    choices = {name for name, _label in form.fields["action"].choices if name} if form is not None else set()
    assert choices - {"delete_selected"} == offered


@pytest.mark.parametrize(("perms", "sent"), [(("view_periodictask", "change_periodictask"), False),
                                              (("view_periodictask", "run_job"), True)])
def test_the_run_action_runs_only_with_run_job(client, monkeypatch, perms, sent):
    from celery import current_app

    from scheduler_app.registry import load_registry

    load_registry()

    task = PeriodicTask.objects.create(name=SPEC_NAME, task="audit.tasks.archive_audit_logs_task",
                                       crontab=CrontabSchedule.objects.create(minute="0", hour="2", timezone="UTC"))
    calls = []
    celery_task = current_app.tasks["audit.tasks.archive_audit_logs_task"]

    def apply_async(*args, **kwargs):
        calls.append(kwargs)
        return _Sent()

    monkeypatch.setattr(celery_task, "apply_async", apply_async)
    # The action first asks whether a worker is up (scheduler_app.run_now); this test is about the permission.
    monkeypatch.setattr(current_app.control, "ping", lambda *args, **kwargs: [{"w1@test": {"ok": "pong"}}])
    login(client, *perms)

    response = client.post(reverse("admin:django_celery_beat_periodictask_changelist"),
                           {"action": "run_tasks", "_selected_action": [task.pk]}, follow=True)

    assert bool(calls) is sent, [str(m) for m in response.context["messages"]]


class _Sent:
    id = "sent-id"
    state = "PENDING"
