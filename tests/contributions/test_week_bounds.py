"""week_bounds: SPEC §5 "Weekly summaries" (the week a run summarises)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import time_machine

from contributions.services import week_bounds
from tests.factories import at

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("now", ["2026-11-30 00:00:00", "2026-11-30 09:00:00", "2026-11-30 23:59:59"])
def test_a_monday_run_at_any_hour_summarises_the_week_before(now):
    # when
    start, end = week_bounds(now=at(now))

    # then: Monday 2026-11-23 00:00 to Monday 2026-11-30 00:00, end exclusive
    assert (start, end) == (at("2026-11-23 00:00:00"), at("2026-11-30 00:00:00"))


@pytest.mark.parametrize(("now", "expected_start"), [
    ("2026-11-29 23:59:59", "2026-11-16 00:00:00"),  # Sunday: this week is not over yet
    ("2026-12-02 12:00:00", "2026-11-23 00:00:00"),  # Wednesday
    ("2026-12-06 18:00:00", "2026-11-23 00:00:00"),  # Sunday
    ("2026-12-07 00:00:00", "2026-11-30 00:00:00"),  # the next Monday
])
def test_other_days_summarise_the_last_completed_week(now, expected_start):
    start, end = week_bounds(now=at(now))
    assert start == at(expected_start)
    assert end - start == dt.timedelta(days=7)


def test_defaults_to_the_current_time():
    with time_machine.travel(at("2026-11-30 09:00:00"), tick=False):
        assert week_bounds() == (at("2026-11-23 00:00:00"), at("2026-11-30 00:00:00"))


def test_weeks_are_read_in_time_zone(settings):
    # given: Berlin is UTC+1 in November; 2026-11-29 23:30 UTC is already Monday 00:30 there
    settings.TIME_ZONE = "Europe/Berlin"

    # when
    start, end = week_bounds(now=at("2026-11-29 23:30:00"))

    # then: Monday 23 Nov 00:00 to Monday 30 Nov 00:00 Berlin time = 22 Nov 23:00 to 29 Nov 23:00 UTC
    assert (start, end) == (at("2026-11-22 23:00:00"), at("2026-11-29 23:00:00"))
    assert start.tzinfo == BERLIN and start.hour == 0


def test_a_week_with_a_dst_change_runs_midnight_to_midnight(settings):
    # given: Berlin leaves summer time on Sunday 2026-10-25 (UTC+2 -> UTC+1)
    settings.TIME_ZONE = "Europe/Berlin"

    # when: the run of Monday 2026-10-26
    start, end = week_bounds(now=at("2026-10-26 08:00:00"))

    # then: 19 Oct 00:00 CEST (18 Oct 22:00 UTC) to 26 Oct 00:00 CET (25 Oct 23:00 UTC): 7 days and 1 hour
    assert (start, end) == (at("2026-10-18 22:00:00"), at("2026-10-25 23:00:00"))
    assert end.astimezone(dt.UTC) - start.astimezone(dt.UTC) == dt.timedelta(days=7, hours=1)


def test_rejects_a_naive_now():
    with pytest.raises(ValueError):
        week_bounds(now=dt.datetime(2026, 11, 30, 9, 0))  # noqa: DTZ001 - naive on purpose
