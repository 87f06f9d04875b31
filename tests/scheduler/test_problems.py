"""Missed, late, overrunning and broken (issue 9, SPEC §9): the rules on frozen time, with hand-computed values."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from scheduler_app import schedule_services
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from scheduler_app.problems import expected_duration_s, find_problems, percentile

pytestmark = pytest.mark.django_db
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def hourly_task(created: str, name: str = "test-noop", enabled: bool = True) -> PeriodicTask:
    with time_machine.travel(at(created), tick=False):
        cron, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="*", day_of_month="*", month_of_year="*",
                                                        day_of_week="*", timezone="UTC")
        return PeriodicTask.objects.create(name=name, task=get_spec(name).task_name, crontab=cron, enabled=enabled)


def run(job="test-noop", *, scheduled: str | None, started: str, status="SUCCEEDED", skip="", duration_ms=1000,
        heartbeat: str | None = None):
    return JobRun.objects.create(
        job=job, trigger="beat" if scheduled else "manual", scheduled_for=at(scheduled) if scheduled else None,
        status=status, skip_reason=skip, attempts=1, started_at=at(started),
        heartbeat_at=at(heartbeat) if heartbeat else None,
        finished_at=None if status == "RUNNING" else at(started) + dt.timedelta(milliseconds=duration_ms),
        duration_ms=None if status == "RUNNING" else duration_ms, task_id=uuid.uuid4().hex)


def lines(now: str) -> list[str]:
    return [p.line() for p in find_problems(at(now))]


def test_missed_late_and_skipped_times_of_an_hourly_job():
    # given an hourly job created at 00:00 and the grace of 300 s
    hourly_task("2026-11-30T00:00:00")
    run(scheduled="2026-11-30T01:00:00", started="2026-11-30T01:00:02")             # on time
    # 02:00 has no run at all
    run(scheduled="2026-11-30T03:00:00", started="2026-11-30T03:00:01", status="SKIPPED", skip="lock_held")
    run(scheduled="2026-11-30T04:00:00", started="2026-11-30T04:06:00")             # 6 min after its time
    # when checked at 05:03 (05:00 is still within its grace: not missed yet)
    # then 02:00 is missed, 04:00 late; 03:00, whose trigger found the lock held, is neither
    assert lines("2026-11-30T05:03:00") == [
        "test-noop missed 2026-11-30T02:00:00Z",
        "test-noop late 2026-11-30T04:00:00Z started 2026-11-30T04:06:00Z",
    ]
    # and at 05:05:01 the 05:00 time is missed too (problems are listed by job, kind, then time)
    assert lines("2026-11-30T05:05:01")[1] == "test-noop missed 2026-11-30T05:00:00Z"


def test_a_run_starting_exactly_at_the_grace_is_not_late_and_a_time_exactly_at_it_not_missed():
    hourly_task("2026-11-30T00:30:00")
    run(scheduled="2026-11-30T01:00:00", started="2026-11-30T01:05:00")  # 300 s: on the line, not late
    assert lines("2026-11-30T02:05:00") == []  # 02:00 is exactly 300 s old: not missed yet
    assert lines("2026-11-30T02:05:01") == ["test-noop missed 2026-11-30T02:00:00Z"]


def test_the_window_looks_back_24_hours_at_most():
    hourly_task("2026-11-28T00:30:00")
    # nothing ever ran: at 2026-11-30T00:10 the window is (2026-11-29T00:10, 00:05]: 01:00 ... 23:00 and 00:00
    found = lines("2026-11-30T00:10:00")
    assert len(found) == 24
    assert found[0] == "test-noop missed 2026-11-29T01:00:00Z"
    assert found[-1] == "test-noop missed 2026-11-30T00:00:00Z"


def test_disabled_and_paused_jobs_are_never_missed_for_times_while_off():
    task = hourly_task("2026-11-30T00:30:00")
    # paused at 01:30, resumed at 03:30: 02:00 and 03:00 passed while paused
    with time_machine.travel(at("2026-11-30T01:30:00"), tick=False):
        schedule_services.pause(task, reason="maintenance", actor="test")
    run(scheduled="2026-11-30T01:00:00", started="2026-11-30T01:00:01")
    assert lines("2026-11-30T03:20:00") == []  # while paused: nothing
    with time_machine.travel(at("2026-11-30T03:30:00"), tick=False):
        schedule_services.resume(PeriodicTask.objects.get(pk=task.pk), actor="test")
    # then only 04:00, after the resume, counts
    assert lines("2026-11-30T04:10:00") == ["test-noop missed 2026-11-30T04:00:00Z"]
    # and a disabled task has no missed times at all
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    assert lines("2026-11-30T06:10:00") == []


def test_a_schedule_edit_starts_a_new_window():
    task = hourly_task("2026-11-30T00:30:00")
    every_minute = IntervalSchedule.objects.create(every=10, period="minutes")
    with time_machine.travel(at("2026-11-30T03:02:00"), tick=False):
        task.crontab = None
        task.interval = every_minute
        task.save()
    # 01:00-03:00 of the old hourly schedule are not checked; the 10-minute times from 03:10 are
    assert lines("2026-11-30T03:21:00") == ["test-noop missed 2026-11-30T03:10:00Z"]


def test_broken_schedule_is_reported_with_its_reason():
    cron = CrontabSchedule.objects.create(minute="0", hour="25", day_of_month="*", month_of_year="*",
                                          day_of_week="*", timezone="UTC")
    PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, crontab=cron)
    (line,) = lines("2026-11-30T05:00:00")
    assert line.startswith("test-noop broken: crontab '0 25 * * *': hour '25' is invalid: 0-23")


def test_percentile_and_expected_duration_by_hand():
    spec = get_spec("test-noop")  # lock_ttl 30 s: soft time limit 180 s
    assert percentile([5, 1, 4, 2, 3], 0.95) == 5          # nearest rank: ceil(4.75) = 5th
    assert percentile(list(range(1, 21)), 0.95) == 19       # ceil(19.0) = 19th of 1..20
    assert expected_duration_s(spec, [1000] * 4) == 180.0   # fewer than 5 runs: the soft time limit
    assert expected_duration_s(spec, [1000 * s for s in range(1, 11)]) == 60.0   # 3 x 10 s = 30 s, at least 60 s
    assert expected_duration_s(spec, [40_000] * 5) == 120.0  # 3 x 40 s
    assert expected_duration_s(spec, [100_000] * 5) == 180.0  # 3 x 100 s capped by the soft time limit


def test_overrunning_after_three_times_p95_of_recent_runs():
    # given 5 successful runs of 40 s: expected 120 s
    for hour in range(5):
        run(scheduled=None, started=f"2026-11-30T0{hour}:00:00", duration_ms=40_000)
    # and a run started at 06:00:00 that is alive (its heartbeat written a second ago)
    running = run(scheduled=None, started="2026-11-30T06:00:00", status="RUNNING", heartbeat="2026-11-30T06:01:59")
    assert lines("2026-11-30T06:02:00") == []  # exactly 120 s: not yet
    JobRun.objects.filter(pk=running.pk).update(heartbeat_at=at("2026-11-30T06:02:00"))
    assert lines("2026-11-30T06:02:01") == [f"test-noop overrunning run {running.pk} since 2026-11-30T06:00:00Z"]


def test_a_run_without_heartbeat_for_three_periods_is_lost_not_overrunning(settings):
    # given heartbeats every 10 s: lost after 30 s without one
    settings.RUN_HEARTBEAT_SECONDS = 10
    running = run(scheduled=None, started="2026-11-30T06:00:00", status="RUNNING", heartbeat="2026-11-30T06:00:10")
    # then it is alive up to 30 s after its last heartbeat, and lost after that
    assert lines("2026-11-30T06:00:40") == []
    assert lines("2026-11-30T06:00:41") == [f"test-noop lost run {running.pk} last heartbeat 2026-11-30T06:00:10Z"]
    # and a run past its expected duration (180 s) that is lost is reported as lost only
    assert lines("2026-11-30T06:03:01") == [f"test-noop lost run {running.pk} last heartbeat 2026-11-30T06:00:10Z"]


def test_check_schedules_command_exit_codes(capsys):
    hourly_task("2026-11-30T00:30:00")
    with time_machine.travel(at("2026-11-30T00:50:00"), tick=False), pytest.raises(SystemExit) as healthy:
        call_command("check_schedules", "--no-alert")
    assert healthy.value.code == 0
    with time_machine.travel(at("2026-11-30T02:10:00"), tick=False), pytest.raises(SystemExit) as sick:
        call_command("check_schedules", "--no-alert")
    assert sick.value.code == 1
    assert capsys.readouterr().out.splitlines() == ["test-noop missed 2026-11-30T01:00:00Z",
                                                    "test-noop missed 2026-11-30T02:00:00Z"]
