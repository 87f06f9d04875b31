"""Edge cases an adversarial review found in the schedule and operator surfaces (issues 8 and 9)."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditLog
from scheduler_app import schedule_services
from scheduler_app.models import JobRun
from tests.processes import ROOT, process_env

UTC_MIDNIGHT = "2026-01-01T00:00:00Z"  # a fire time of test-noop's crontab "0 0 1 1 *"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=process_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_a_dry_run_of_a_scheduled_time_leaves_it_to_the_real_run(job_redis):
    # when a scheduled time is dry-run, then run for real
    dry = manage("run_job", "test-noop", "--local", "--dry-run", "--scheduled-for", UTC_MIDNIGHT)
    real = manage("run_job", "test-noop", "--local", "--scheduled-for", UTC_MIDNIGHT)
    again = manage("run_job", "test-noop", "--local", "--scheduled-for", UTC_MIDNIGHT)
    # then both ran (the dry run took nothing), and only a third attempt is refused, naming the real run
    assert (dry.returncode, real.returncode, again.returncode) == (0, 0, 3), (dry.stderr, real.stderr)
    runs = list(JobRun.objects.filter(job="test-noop").order_by("id").values_list("dry_run", "status"))
    assert runs == [(True, "SUCCEEDED"), (False, "SUCCEEDED")]
    real_run = JobRun.objects.get(job="test-noop", dry_run=False)
    assert f"already has run {real_run.pk} (SUCCEEDED)" in again.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("value", "says"), [
    ("", "--scheduled-for='' is invalid"),
    ("9999-12-31T23:55:00Z", "has not come yet"),
    ("0001-01-01T00:00:00Z", "--scheduled-for='0001-01-01T00:00:00Z' is invalid"),
])
def test_run_job_refuses_empty_and_extreme_scheduled_times(value, says):
    done = manage("run_job", "test-noop", "--local", "--scheduled-for", value)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not JobRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_job_refuses_a_scheduled_time_before_the_tasks_start_time():
    every, _ = IntervalSchedule.objects.get_or_create(every=7, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="test-noop", task="tests.jobs.noop_job", interval=every,
                                start_time="2026-11-30T16:30:30Z")
    # 16:23:30 is start_time - 7 min: a fire time of the anchored interval, but before the start
    done = manage("run_job", "test-noop", "--local", "--scheduled-for", "2026-11-30T16:23:30Z")
    assert done.returncode == 2
    assert "is before the job's start_time 2026-11-30T16:30:30Z" in done.stderr
    assert not JobRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_pause_until_the_far_future_is_a_usage_error():
    call_command("sync_schedules", stdout=StringIO())
    done = manage("pause_job", "archive-audit-logs", "--reason", "x", "--until", "9999-12-31T23:59:59",
                  TIME_ZONE="America/New_York")
    assert done.returncode == 2 and "before the year 9000" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.django_db
def test_a_solar_schedule_is_reported_broken_and_the_pages_still_render(staff, job_redis):
    # given the hourly job switched to a solar schedule (Celery needs the ephem package for it, not installed)
    call_command("sync_schedules", stdout=StringIO())
    task = PeriodicTask.objects.get(name="update-group-statuses")
    task.crontab = None
    task.solar = SolarSchedule.objects.create(event="sunrise", latitude=51.5, longitude=-0.1)
    task.save()
    # then the admin list and change page, the dashboard and /metrics answer, and the schedule reads as broken
    for url in (reverse("admin:django_celery_beat_periodictask_changelist"),
                reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]),
                reverse("scheduler-dashboard"), "/metrics"):
        assert staff.get(url).status_code == 200, url
    with pytest.raises(ValueError, match="its schedule cannot be built"):
        schedule_services.task_schedule(task)


@pytest.mark.django_db
def test_deleting_a_crontab_in_use_deletes_its_task_and_audits_both(staff):
    call_command("sync_schedules", stdout=StringIO())
    crontab = PeriodicTask.objects.get(name="archive-audit-logs").crontab
    response = staff.post(reverse("admin:django_celery_beat_crontabschedule_delete", args=[crontab.pk]),
                          {"post": "yes"})
    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(name="archive-audit-logs").exists()
    deleted = AuditLog.objects.get(action="SCHEDULE_DELETED", entity_type="periodic_task",
                                   entity_id="archive-audit-logs")
    assert deleted.metadata["diff"]["crontab"][0] == f"#{crontab.pk} (deleted)"
    assert AuditLog.objects.filter(action="SCHEDULE_DELETED", entity_type="crontabschedule",
                                   entity_id=str(crontab.pk), user__username="op").exists()


@pytest.mark.django_db
def test_an_interval_edited_in_the_admin_is_audited_as_the_admin_user(staff):
    every = IntervalSchedule.objects.create(every=7, period=IntervalSchedule.MINUTES)
    page = staff.get(reverse("admin:django_celery_beat_intervalschedule_change", args=[every.pk]))
    data = {"every": "9", "period": "minutes"}
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({f"{management.prefix}-{k}": v for k, v in management.initial.items()})
    assert staff.post(reverse("admin:django_celery_beat_intervalschedule_change", args=[every.pk]),
                      data).status_code == 302
    log = AuditLog.objects.get(action="SCHEDULE_CHANGED", entity_type="intervalschedule")
    assert log.user is not None and log.user.username == "op" and log.details.endswith("by admin user op")
    assert log.metadata["diff"] == {"every": ["7", "9"]}


@pytest.mark.django_db
def test_a_task_name_longer_than_the_audit_entity_id_is_kept_whole_in_the_metadata():
    name = "n" * 100
    PeriodicTask.objects.create(name=name, task="tests.jobs.noop_job",
                                crontab=CrontabSchedule.objects.create(minute="0", hour="3"))
    log = AuditLog.objects.get(action="SCHEDULE_CREATED", entity_type="periodic_task")
    assert (log.entity_id, log.metadata["entity"]) == ("n" * 64, name)


@pytest.mark.django_db
def test_a_second_task_running_a_jobs_task_is_not_the_jobs_schedule_in_metrics(staff, job_redis):
    call_command("sync_schedules", stdout=StringIO())
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="tmp-extra", task="audit.tasks.archive_audit_logs_task", interval=every,
                                enabled=False)
    text = staff.get("/metrics").content.decode()
    samples = [s for family in text_string_to_metric_families(text) if family.name == "scheduler_job_enabled"
               for s in family.samples if s.labels.get("job") == "archive-audit-logs"]
    assert [s.value for s in samples] == [1.0]  # one series, the job's own enabled task


def test_alert_urls_are_masked_in_the_configuration_error():
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=process_env(ALERT_URLS="mailto:bob:pw123@x.org"))
    assert done.returncode != 0
    assert "ALERT_URLS='mailto:**' is invalid" in done.stderr and "pw123" not in done.stderr + done.stdout
