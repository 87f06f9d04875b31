"""Scheduled times are computed from the schedule, never from the moment beat woke (SPEC §3)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from celery import schedules

from scheduler_app.schedules import AlignedSchedule, crontab_slot, interval_slot, parse_crontab, slot_for

UTC = dt.UTC


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_daily_crontab_slot_is_todays_0200_after_two():
    cron = parse_crontab("0 2 * * *")
    assert crontab_slot(cron, t("2026-11-30 02:00:00"), UTC) == t("2026-11-30 02:00:00")
    assert crontab_slot(cron, t("2026-11-30 02:00:59.9"), UTC) == t("2026-11-30 02:00:00")
    assert crontab_slot(cron, t("2026-11-30 13:15:00"), UTC) == t("2026-11-30 02:00:00")


def test_daily_crontab_slot_before_two_is_yesterdays():
    cron = parse_crontab("0 2 * * *")
    assert crontab_slot(cron, t("2026-11-30 01:59:59"), UTC) == t("2026-11-29 02:00:00")


def test_monday_crontab_slot():
    # 2026-11-30 is a Monday; 2026-12-02 a Wednesday.
    cron = parse_crontab("0 9 * * 1")
    assert crontab_slot(cron, t("2026-11-30 09:00:01"), UTC) == t("2026-11-30 09:00:00")
    assert crontab_slot(cron, t("2026-12-02 12:00:00"), UTC) == t("2026-11-30 09:00:00")
    assert crontab_slot(cron, t("2026-11-30 08:59:59"), UTC) == t("2026-11-23 09:00:00")


def test_hourly_crontab_slot():
    cron = parse_crontab("0 * * * *")
    assert crontab_slot(cron, t("2026-11-30 17:59:59"), UTC) == t("2026-11-30 17:00:00")
    assert crontab_slot(cron, t("2026-11-30 00:00:00"), UTC) == t("2026-11-30 00:00:00")


def test_crontab_is_read_in_the_time_zone():
    # 02:00 in Berlin (UTC+1 in winter) is 01:00 UTC.
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    cron = parse_crontab("0 2 * * *")
    assert crontab_slot(cron, t("2026-11-30 01:30:00"), berlin) == t("2026-11-30 01:00:00")
    assert crontab_slot(cron, t("2026-11-30 00:59:00"), berlin) == t("2026-11-29 01:00:00")


def test_interval_slot_is_a_multiple_of_the_interval_since_the_epoch():
    # 1_764_460_805 s since the epoch; 10 s slots start at ...800.
    now = dt.datetime.fromtimestamp(1_764_460_805.7, tz=UTC)
    assert interval_slot(10, now).timestamp() == 1_764_460_800
    assert interval_slot(3600, now).timestamp() == 1_764_460_800 - (1_764_460_800 % 3600)


def test_slot_for_interval_schedule_and_beats_one_second_apart_agree():
    every = schedules.schedule(dt.timedelta(seconds=5))
    assert slot_for(every, t("2026-11-30 10:00:07")) == t("2026-11-30 10:00:05")
    assert slot_for(every, t("2026-11-30 10:00:08")) == t("2026-11-30 10:00:05")


def test_aligned_schedule_is_due_once_per_slot():
    now = {"value": t("2026-11-30 10:00:07")}
    sched = AlignedSchedule(dt.timedelta(seconds=5), nowfun=lambda: now["value"])
    due, remaining = sched.is_due(t("2026-11-30 10:00:04.9"))
    assert due and remaining == pytest.approx(3.0)
    due, remaining = sched.is_due(t("2026-11-30 10:00:05.0"))
    assert not due and remaining == pytest.approx(3.0)


@pytest.mark.parametrize("expression", ["0 3 * *", "61 * * * *", "0 3 * * * *", "x y z w v"])
def test_parse_crontab_rejects_bad_expressions_naming_them(expression):
    with pytest.raises(ValueError) as err:
        parse_crontab(expression)
    assert repr(expression) in str(err.value)


def _matches(cron, local) -> bool:
    return (local.minute in cron.minute and local.hour in cron.hour and local.day in cron.day_of_month
            and local.month in cron.month_of_year and (local.weekday() + 1) % 7 in cron.day_of_week)


def _brute_force(cron, now, tz):
    """The latest minute at or before ``now`` that fires, minute by minute in UTC, by the README's DST rules.

    A minute fires when its wall time in ``tz`` matches and it is the first
    occurrence of that wall time (or the crontab runs every hour, then the
    repeated hour fires too), or when it is the first minute after a DST gap
    that swallowed a matching wall time, unless the crontab fires every hour
    (the skipped 02:30 of a daily job in New York fires at 03:00 EDT = 07:00
    UTC; an hourly job's skipped 02:15 does not fire).
    """
    every_hour = len(cron.hour) == 24
    moment = now.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(60 * 24 * 9):
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        if _matches(cron, wall) and (local.fold == 0 or every_hour):
            return moment
        before = (moment - dt.timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None, fold=0)
        skipped = before + dt.timedelta(minutes=1)
        while not every_hour and skipped < wall:  # wall times the clock jumped over (hourly crontabs skip them)
            if _matches(cron, skipped):
                return moment
            skipped += dt.timedelta(minutes=1)
        moment -= dt.timedelta(minutes=1)
    raise AssertionError("no fire time found")


def test_a_crontab_time_skipped_by_dst_belongs_to_that_day():
    # 2026-03-29 02:00 does not exist in Berlin (01:59 CET -> 03:00 CEST); it fires at 03:00 CEST = 01:00 UTC.
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    cron = parse_crontab("0 2 * * *")
    assert crontab_slot(cron, t("2026-03-29 01:00:30"), berlin) == t("2026-03-29 01:00:00")
    assert crontab_slot(cron, t("2026-03-29 00:59:00"), berlin) == t("2026-03-28 01:00:00")
    assert crontab_slot(cron, t("2026-03-29 23:30:00"), berlin) == t("2026-03-29 01:00:00")  # 01:30 CEST next day


@pytest.mark.parametrize("expression", ["30 1 * * *", "30 2 * * *", "0 * * * *", "15 * * * *", "15 3 * * 0"])
def test_crontab_slot_across_new_york_dst_changes_matches_a_minute_by_minute_search(expression):
    # 2026-03-08 02:00 EST -> 03:00 EDT (02:30 does not exist); 2026-11-01 02:00 EDT -> 01:00 EST (01:30 twice)
    tz = zoneinfo.ZoneInfo("America/New_York")
    cron = parse_crontab(expression)
    for start in (t("2026-03-08 05:00:00"), t("2026-11-01 04:00:00")):
        for minutes in range(0, 6 * 60, 7):
            now = start + dt.timedelta(minutes=minutes)
            assert crontab_slot(cron, now, tz) == _brute_force(cron, now, tz), (expression, now)


def test_clocked_schedule_slot_is_its_time():
    from django_celery_beat.clockedschedule import clocked

    when = t("2026-12-01 08:00:00")
    assert slot_for(clocked(when), t("2026-12-01 08:00:03")) == when


def test_an_hourly_crontab_off_the_hour_runs_once_every_real_hour_on_the_spring_forward_day():
    # 2026-03-08 in New York: 02:00 EST -> 03:00 EDT at 07:00 UTC, so 02:15 does not exist
    from scheduler_app.schedules import fire_times_between

    tz = zoneinfo.ZoneInfo("America/New_York")
    cron = parse_crontab("15 * * * *")
    cron.tz = tz
    # local day 00:00 EST (05:00Z) .. 24:00 EDT (04:00Z next day): 23 real hours, one :15 each
    times = fire_times_between(cron, t("2026-03-08 05:00:00"), t("2026-03-09 04:00:00"))
    assert len(times) == 23
    assert times[:3] == [t("2026-03-08 05:15:00"), t("2026-03-08 06:15:00"), t("2026-03-08 07:15:00")]
    assert times[-1] == t("2026-03-09 03:15:00")
