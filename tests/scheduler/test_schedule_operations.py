"""Schedules an operator can trust (SPEC §10, issue 8): validation, next times, pause/resume, audit, backfill.

The beat-side rules (DST, start_time, catch-up) are in ``test_schedule_rules.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from audit.models import AuditLog
from scheduler_app import schedule_services
from scheduler_app.beat import JobScheduler
from scheduler_app.models import JobRun, SchedulePause
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def schedules_synced():
    call_command("sync_schedules", stdout=StringIO())


def post_crontab(operator, fields: dict[str, str]):
    """POST the crontab add form like a browser: with the management form of its periodic-task inline."""
    url = reverse("admin:django_celery_beat_crontabschedule_add")
    page = operator.get(url)
    data = dict(fields)
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({f"{management.prefix}-{k}": v for k, v in management.initial.items()})
    return operator.post(url, data)


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=process_env(), capture_output=True,
                          text=True, timeout=120)


# -- never a silent drop --------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field", "says"), [
    (("0", "2", "31", "2", "7"), "day_of_week",
     "day_of_week '7' is invalid: 0-6 (0 = Sunday) or sun-sat; use 0 for Sunday"),
    (("*", "*", "*", "*", "1,7"), "day_of_week", "day_of_week '1,7' is invalid: 0-6 (0 = Sunday)"),
    (("0", "2", "30", "2", "*"), "day_of_month", "day_of_month '30' never occurs in month_of_year '2'"),
    (("0", "2", "31", "4", "*"), "day_of_month", "day_of_month '31' never occurs in month_of_year '4'"),
    (("61", "*", "*", "*", "*"), "minute", "minute '61' is invalid: 0-59"),
    (("0", "24", "*", "*", "*"), "hour", "hour '24' is invalid: 0-23"),
    (("0", "2", "0", "*", "*"), "day_of_month", "day_of_month '0' is invalid: 1-31"),
    (("0", "2", "*", "13", "*"), "month_of_year", "month_of_year '13' is invalid: 1-12"),
])
def test_the_admin_crontab_form_rejects_what_never_fires_naming_the_field(operator, fields, field, says):
    # given the crontab add form
    minute, hour, dom, month, dow = fields
    before = CrontabSchedule.objects.count()
    # when an operator saves a crontab Celery cannot run or that never fires
    response = post_crontab(operator, {"minute": minute, "hour": hour, "day_of_month": dom, "month_of_year": month,
                                       "day_of_week": dow, "timezone": "UTC"})
    # then the form comes back with the error on the field (or the form), and nothing is saved
    assert response.status_code == 200
    form = response.context["adminform"].form
    errors = form.errors.get(field, [])
    assert any(says in e for e in errors), form.errors
    assert CrontabSchedule.objects.count() == before


def test_a_valid_crontab_saves_and_is_audited_as_the_admin_user(operator):
    response = post_crontab(operator, {"minute": "15", "hour": "3", "day_of_month": "*", "month_of_year": "*",
                                       "day_of_week": "1-5", "timezone": "UTC"})
    assert response.status_code == 302
    row = CrontabSchedule.objects.get(minute="15", hour="3")
    log = AuditLog.objects.get(action="SCHEDULE_CREATED", entity_type="crontabschedule", entity_id=str(row.pk))
    assert log.user is not None and log.user.username == "op" and log.details.endswith("by admin user op")
    assert log.metadata["diff"]["day_of_week"] == [None, "1-5"]


def _break_crontab(name: str) -> None:
    """Make the job's crontab 30 February, bypassing validation (as an old row or a raw UPDATE could)."""
    CrontabSchedule.objects.filter(pk=PeriodicTask.objects.get(name=name).crontab_id).update(
        day_of_month="30", month_of_year="2")


@pytest.mark.django_db(transaction=True)
def test_sync_schedules_dry_run_and_check_report_a_broken_schedule(schedules_synced):
    # given the hourly job's crontab became 30 February outside the admin
    _break_crontab("update-group-statuses")
    # when sync_schedules --dry-run and --check look at it
    out = StringIO()
    call_command("sync_schedules", dry_run=True, stdout=out)
    done = manage("sync_schedules", "--check")
    # then both call it broken, saying why, never "unchanged"
    line = next(line for line in out.getvalue().splitlines() if line.startswith("update-group-statuses:"))
    assert line.startswith("update-group-statuses: broken: crontab '0 * 30 2 *': day_of_month '30' never occurs")
    assert done.returncode == 1
    assert "update-group-statuses: broken: crontab '0 * 30 2 *': day_of_month '30' never occurs in month_of_year '2'" \
        in done.stdout


def test_beat_logs_a_schedule_it_cannot_build_once_per_change(schedules_synced, caplog):
    # given a broken crontab and a beat scheduler reading the schedules
    _break_crontab("update-group-statuses")
    scheduler = JobScheduler(app=__import__("celery").current_app, lazy=True)
    # when it reads them three times, the row changes, and it reads them again
    with caplog.at_level(logging.ERROR, logger="scheduler"):
        for _ in range(3):
            entries = scheduler.all_as_schedule()
        PeriodicTask.objects.filter(name="update-group-statuses").update(date_changed=at("2026-12-01 00:00:00"))
        scheduler.all_as_schedule()
    # then the task is left out of the schedule and reported twice: once, and once after its change
    assert "update-group-statuses" not in entries and "archive-audit-logs" in entries
    errors = [r.getMessage() for r in caplog.records if "update-group-statuses" in r.getMessage()]
    assert len(errors) == 2
    assert errors[0].startswith(
        "Periodic task 'update-group-statuses' is not scheduled: its schedule cannot be built: "
    )
    assert "never occurs in month_of_year '2'" in errors[0]


@pytest.mark.django_db(transaction=True)
def test_sync_schedules_check_lists_each_difference(schedules_synced, monkeypatch, settings):
    # given: the archive's crontab edited in the admin, the summaries' schedule deleted, and an override
    task = PeriodicTask.objects.get(name="archive-audit-logs")
    task.crontab = CrontabSchedule.objects.create(minute="30", hour="4", timezone="UTC")
    task.save()
    PeriodicTask.objects.get(name="send-contribution-summaries").delete()
    env = process_env(SCHEDULE_UPDATE_GROUP_STATUSES="15 * * * *")
    # when --check compares
    done = subprocess.run([sys.executable, "manage.py", "sync_schedules", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    # then one line per difference, exit 1
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("test-")]
    assert lines == [
        'archive-audit-logs: crontab "30 4 * * *" in the database, expected "0 2 * * *" (the registry default)',
        'send-contribution-summaries: no PeriodicTask; expected crontab "0 9 * * 1" (the registry default); '
        'run sync_schedules',
        'update-group-statuses: crontab "0 * * * *" in the database, expected "15 * * * *" '
        '(SCHEDULE_UPDATE_GROUP_STATUSES)',
    ]
    # and after sync_schedules (with the override) only the admin's edit is left
    subprocess.run([sys.executable, "manage.py", "sync_schedules"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    again = subprocess.run([sys.executable, "manage.py", "sync_schedules", "--check"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert [line for line in again.stdout.splitlines() if line.startswith(("archive", "send", "update"))] == [
        'archive-audit-logs: crontab "30 4 * * *" in the database, expected "0 2 * * *" (the registry default)']


# -- next scheduled times ----------------------------------------------------------------

@time_machine.travel(at("2026-11-30 10:20:00"), tick=False)
def test_the_change_forms_show_the_next_five_times_in_time_zone_and_utc(operator, settings):
    # given TIME_ZONE Europe/Berlin and the summaries at 09:00 on Mondays, Berlin time
    settings.TIME_ZONE = "Europe/Berlin"
    crontab = CrontabSchedule.objects.create(minute="0", hour="9", day_of_week="1", timezone="Europe/Berlin")
    task = PeriodicTask.objects.create(name="send-contribution-summaries", crontab=crontab,
                                       task="contributions.tasks.send_contribution_summaries_task")
    # when the periodic task and the crontab change forms are opened (Monday 30 Nov 11:20 CET)
    pages = [operator.get(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])),
             operator.get(reverse("admin:django_celery_beat_crontabschedule_change", args=[crontab.pk]))]
    # then both list the next five Mondays at 09:00 CET = 08:00 UTC
    expected = ["2026-12-07 09:00:00 CET (2026-12-07 08:00:00 UTC)",
                "2026-12-14 09:00:00 CET (2026-12-14 08:00:00 UTC)",
                "2026-12-21 09:00:00 CET (2026-12-21 08:00:00 UTC)",
                "2026-12-28 09:00:00 CET (2026-12-28 08:00:00 UTC)",
                "2027-01-04 09:00:00 CET (2027-01-04 08:00:00 UTC)"]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert [html.index(f"<li>{line}</li>") for line in expected] == sorted(
            html.index(f"<li>{line}</li>") for line in expected)


@time_machine.travel(at("2026-11-30 10:20:00"), tick=False)
def test_sync_schedules_dry_run_prints_each_jobs_next_time():
    out = StringIO()
    call_command("sync_schedules", dry_run=True, stdout=out)
    lines = {line.split(":")[0]: line for line in out.getvalue().splitlines()}
    assert lines["update-group-statuses"].endswith("; next: 2026-11-30 11:00:00 UTC (2026-11-30 11:00:00 UTC)")
    assert lines["archive-audit-logs"].endswith("; next: 2026-12-01 02:00:00 UTC (2026-12-01 02:00:00 UTC)")
    assert lines["send-contribution-summaries"].endswith("; next: 2026-12-07 09:00:00 UTC (2026-12-07 09:00:00 UTC)")
    assert not PeriodicTask.objects.exists()


# -- every change audited -----------------------------------------------------------------

def _audits(name: str) -> list[tuple[str, dict]]:
    return [(a.action, a.metadata["diff"]) for a in
            AuditLog.objects.filter(entity_type="periodic_task", entity_id=name).order_by("id")]


def test_admin_bulk_actions_are_audited_and_enabling_runs_nothing_that_passed(operator, schedules_synced):
    name = "update-group-statuses"
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    pk = PeriodicTask.objects.get(name=name).pk
    AuditLog.objects.all().delete()
    # when the operator disables, then enables it with the bulk actions
    with time_machine.travel(at("2026-11-30 10:30:00"), tick=False):
        operator.post(url, {"action": "disable_tasks", "_selected_action": [pk]})
    with time_machine.travel(at("2026-11-30 13:36:43"), tick=False):
        response = operator.post(url, {"action": "enable_tasks", "_selected_action": [pk]})
    # then two audit rows name the admin and the change, and last_run_at is the moment it was enabled
    assert response.status_code == 302
    assert _audits(name) == [("SCHEDULE_DISABLED", {"enabled": ["True", "False"]}),
                             ("SCHEDULE_ENABLED", {"enabled": ["False", "True"]})]
    assert set(AuditLog.objects.values_list("user__username", flat=True)) == {"op"}
    assert PeriodicTask.objects.get(name=name).last_run_at == at("2026-11-30 13:36:43")


def test_the_admin_pause_action_asks_for_a_reason_then_pauses_and_audits(operator, schedules_synced):
    name = "archive-audit-logs"
    pk = PeriodicTask.objects.get(name=name).pk
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    # when the operator picks "Pause" (the page asks for a reason), then submits one
    ask = operator.post(url, {"action": "pause_tasks", "_selected_action": [pk]})
    done = operator.post(url, {"action": "pause_tasks", "_selected_action": [pk], "apply": "1",
                               "reason": "migrating the archive table", "until": ""})
    # then the task is paused with the reason, disabled, audited, and shown in the list
    assert ask.status_code == 200 and b"Pause 1 task" in ask.content
    assert done.status_code == 302
    pause = SchedulePause.objects.get(periodic_task__name=name)
    assert (pause.reason, pause.paused_by, pause.until) == ("migrating the archive table", "admin user op", None)
    assert PeriodicTask.objects.get(name=name).enabled is False
    log = AuditLog.objects.get(action="SCHEDULE_PAUSED", entity_id=name)
    assert log.metadata["reason"] == "migrating the archive table"
    assert log.metadata["diff"] == {"enabled": ["True", "False"]}
    listing = operator.get(url).content.decode()
    assert "paused by admin user op: migrating the archive table" in listing


def test_deleting_a_schedule_in_the_admin_is_audited_with_what_it_was(operator, schedules_synced):
    task = PeriodicTask.objects.get(name="archive-audit-logs")
    operator.post(reverse("admin:django_celery_beat_periodictask_delete", args=[task.pk]), {"post": "yes"})
    log = AuditLog.objects.get(action="SCHEDULE_DELETED", entity_id="archive-audit-logs")
    assert log.metadata["diff"]["task"] == ["audit.tasks.archive_audit_logs_task", None]
    assert log.metadata["diff"]["crontab"][0].startswith("0 2 * * *")
    assert log.user is not None and log.user.username == "op"


# -- pause_job / resume_job -----------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_pause_job_and_resume_job_from_the_command_line(schedules_synced):
    # when the hourly job is paused until 2030 and then resumed
    paused = manage("pause_job", "update-group-statuses", "--reason", "DB maintenance",
                    "--until", "2030-01-01T00:00:00Z")
    task = PeriodicTask.objects.get(name="update-group-statuses")
    pause = SchedulePause.objects.get(periodic_task=task)
    resumed = manage("resume_job", "update-group-statuses")
    # then each exits 0 and says so; the pause existed with its reason and end; it is gone and the task runs again
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "update-group-statuses: paused until 2030-01-01T00:00:00Z: DB maintenance"
    assert (pause.reason, pause.until, task.enabled) == ("DB maintenance", at("2030-01-01 00:00:00"), False)
    assert pause.paused_by.startswith("manage.py pause_job by ")
    assert resumed.returncode == 0 and resumed.stdout.startswith("update-group-statuses: resumed; next: ")
    task.refresh_from_db()
    assert task.enabled and not SchedulePause.objects.exists()
    assert [a for a, _ in _audits("update-group-statuses")][-2:] == ["SCHEDULE_PAUSED", "SCHEDULE_RESUMED"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("args", "says"), [
    (["pause_job", "archive-audit-log", "--reason", "x"], "unknown job 'archive-audit-log'; valid jobs: "),
    (["pause_job", "archive-audit-logs"], "the following arguments are required: --reason"),
    (["pause_job", "archive-audit-logs", "--reason", "  "], "a pause needs a reason"),
    (["pause_job", "archive-audit-logs", "--reason", "x", "--until", "2020-01-01T00:00:00Z"],
     "until=2020-01-01T00:00:00Z is invalid: a time after now"),
    (["pause_job", "archive-audit-logs", "--reason", "x", "--until", "tomorrow"], "--until='tomorrow' is invalid"),
    (["resume_job", "nope"], "unknown job 'nope'"),
])
def test_pause_and_resume_usage_errors_exit_2_and_change_nothing(schedules_synced, args, says):
    done = manage(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert not SchedulePause.objects.exists()
    assert PeriodicTask.objects.get(name="archive-audit-logs").enabled


# -- run_job --scheduled-for -----------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_run_job_scheduled_for_runs_that_time_once(job_redis):
    # given test-noop, whose crontab "0 0 1 1 *" fires at midnight UTC on 1 January
    # when 2026-01-01T00:00:00Z is run by hand, locally, twice
    first = manage("run_job", "test-noop", "--local", "--scheduled-for", "2026-01-01T00:00:00Z")
    second = manage("run_job", "test-noop", "--local", "--scheduled-for", "2026-01-01T00:00:00Z")
    # then the first runs it as a manual run of that scheduled time, the second exits 3 naming that run
    assert first.returncode == 0, first.stderr
    run = JobRun.objects.get(job="test-noop")
    assert (run.trigger, run.scheduled_for, run.status) == ("manual", at("2026-01-01 00:00:00"), "SUCCEEDED")
    assert second.returncode == 3
    assert f"scheduled time 2026-01-01T00:00:00Z already has run {run.pk} (SUCCEEDED)" in second.stderr
    assert JobRun.objects.count() == 1


@pytest.mark.parametrize(("when", "says"), [
    ("2026-01-01T00:30:00Z", "--scheduled-for=2026-01-01T00:30:00Z is not a scheduled time of test-noop"),
    ("2999-01-01T00:00:00Z", "--scheduled-for=2999-01-01T00:00:00Z has not come yet"),
    ("New Year", "--scheduled-for='New Year' is invalid: an ISO 8601 time"),
])
def test_run_job_scheduled_for_refuses_a_time_that_is_not_a_fire_time(when, says):
    done = manage("run_job", "test-noop", "--local", "--scheduled-for", when)
    assert done.returncode == 2
    assert says in done.stderr
    assert not JobRun.objects.exists()


def test_re_enabling_in_code_sets_last_run_at_to_that_moment(schedules_synced):
    task = PeriodicTask.objects.get(name="update-group-statuses")
    with time_machine.travel(at("2026-11-30 10:00:01"), tick=False):
        schedule_services.set_enabled([task], False, actor="test")
    with time_machine.travel(at("2026-11-30 13:36:43"), tick=False):
        schedule_services.set_enabled([task], True, actor="test")
    task.refresh_from_db()
    assert task.enabled and task.last_run_at == at("2026-11-30 13:36:43")
