"""The periodic-task form refuses a task no worker runs and a one-off time already past (issue 11 item 4)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.urls import reverse
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

pytestmark = pytest.mark.django_db
UTC = dt.UTC
NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def operator(client):
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


@pytest.fixture
def crontab():
    return CrontabSchedule.objects.create(minute="0", hour="3", timezone="UTC")


def task_form(**overrides: str) -> dict[str, str]:
    """The periodic-task add form as a browser posts it (empty fields included)."""
    data = {"name": "extra run", "regtask": "", "task": "", "enabled": "on", "description": "",
            "interval": "", "crontab": "", "solar": "", "clocked": "", "start_time_0": "", "start_time_1": "",
            "args": "[]", "kwargs": "{}", "expires_0": "", "expires_1": "", "expire_seconds": "",
            "queue": "", "exchange": "", "routing_key": "", "priority": "", "headers": "{}"}
    data.update(overrides)
    return data


def clocked_at(text: str) -> str:
    return str(ClockedSchedule.objects.create(clocked_time=dt.datetime.fromisoformat(text)).pk)


# (field, posted values (a "clocked" value is the clocked time to create), error words)
BAD_ROWS = [
    ("task", {"task": "os.system"}, "'os.system' is not a registered job or Celery task"),
    ("task", {"task": "audit.tasks.no_such_task"}, "'audit.tasks.no_such_task' is not a registered job"),
    ("task", {"task": "audit.tasks"}, "'audit.tasks' is not a registered job"),
    ("clocked", {"task": "audit.tasks.archive_audit_logs_task", "clocked": "2026-11-30T08:59:59+00:00",
                 "one_off": "on"},
     "2026-11-30 08:59:59 UTC has passed: a one-off task needs a clocked time in the future"),
    ("clocked", {"task": "audit.tasks.archive_audit_logs_task", "clocked": "2026-11-30T09:00:00+00:00",
                 "one_off": "on"}, "has passed"),
]


@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize(("field", "values", "message"), BAD_ROWS)
def test_the_periodic_task_form_refuses_bad_input_naming_the_field(operator, crontab, field, values, message):
    values = dict(values)
    if "clocked" in values:
        values["clocked"] = clocked_at(values["clocked"])
    else:
        values["crontab"] = str(crontab.pk)
    before = PeriodicTask.objects.count()

    response = operator.post(reverse("admin:django_celery_beat_periodictask_add"), task_form(**values))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert any(message in error for error in form.errors.get(field, [])), form.errors
    assert PeriodicTask.objects.count() == before


GOOD_ROWS = [
    {"task": "audit.tasks.archive_audit_logs_task", "crontab": "cron"},
    {"regtask": "contributions.tasks.send_contribution_summaries_task", "crontab": "cron"},
    {"task": "celery.backend_cleanup", "crontab": "cron"},
    {"task": "audit.tasks.archive_audit_logs_task", "clocked": "2026-11-30T09:00:01+00:00", "one_off": "on"},
]


@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize("values", GOOD_ROWS)
def test_the_periodic_task_form_accepts_a_registered_task(operator, crontab, values):
    values = dict(values)
    if values.get("crontab") == "cron":
        values["crontab"] = str(crontab.pk)
    if "clocked" in values:
        values["clocked"] = clocked_at(values["clocked"])

    response = operator.post(reverse("admin:django_celery_beat_periodictask_add"), task_form(**values))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PeriodicTask.objects.filter(name="extra run").exists()


def test_an_existing_one_off_task_keeps_its_past_time_when_edited(operator):
    with time_machine.travel(NOW, tick=False):
        clocked = clocked_at("2026-11-30T10:00:00+00:00")
        operator.post(reverse("admin:django_celery_beat_periodictask_add"), task_form(
            task="audit.tasks.archive_audit_logs_task", clocked=clocked, one_off="on"))
    task = PeriodicTask.objects.get(name="extra run")

    # when, after its time, the description is edited
    with time_machine.travel(NOW + dt.timedelta(days=1), tick=False):
        response = operator.post(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]), task_form(
            task="audit.tasks.archive_audit_logs_task", clocked=clocked, one_off="on", description="ran"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PeriodicTask.objects.get(pk=task.pk).description == "ran"
