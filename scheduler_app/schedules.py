"""Scheduled times: the fire time a message belongs to (SPEC §3).

Every beat must compute the same scheduled time for one firing, whatever
moment it woke up, so the time comes from the schedule, not from the clock:

* crontab: the latest fire time at or before now, read in the schedule's
  time zone (``TIME_ZONE``), to the minute;
* interval: the latest whole multiple of the interval since the Unix epoch.
"""

from __future__ import annotations

import datetime as dt
import math

from celery import schedules

UTC = dt.timezone.utc


def parse_crontab(expression: str, *, tz=None) -> schedules.crontab:
    """Build a Celery crontab from ``"minute hour day_of_month month_of_year day_of_week"``.

    Raises ValueError naming the expression when it does not have five fields
    or a field is out of range.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"crontab {expression!r} is invalid: it needs 5 fields (minute hour day_of_month month_of_year day_of_week)")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return schedules.crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                                 month_of_year=month_of_year, day_of_week=day_of_week)
    except Exception as exc:
        raise ValueError(f"crontab {expression!r} is invalid: {exc}") from None


def interval_slot(every_seconds: float, now: dt.datetime) -> dt.datetime:
    """Return the latest whole multiple of ``every_seconds`` since the epoch at or before ``now`` (UTC)."""
    ts = now.timestamp()
    return dt.datetime.fromtimestamp(math.floor(ts / every_seconds) * every_seconds, tz=UTC)


def crontab_slot(cron: schedules.crontab, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """Return the latest fire time of ``cron`` at or before ``now``, as an aware UTC datetime.

    Follows Celery's crontab semantics: a day must match day_of_month,
    month_of_year and day_of_week together. ``tz`` is the zone the crontab is
    read in. Around DST changes, times are compared in UTC: a repeated wall
    time (clocks going back) counts at both of its instants, and a wall time
    that does not exist that day (clocks going forward) counts at its
    ``fold=0`` instant, the moment Celery fires it (e.g. ``0 2 * * *`` in
    Europe/Berlin on 2026-03-29 is 01:00 UTC). Raises ValueError if the
    crontab never fired in the last 5 years (e.g. 30 February).
    """
    now_utc = now.astimezone(UTC)
    local = now_utc.astimezone(tz)
    hours = sorted(cron.hour, reverse=True)
    minutes = sorted(cron.minute, reverse=True)
    for offset in range(0, 366 * 5):
        day = local.date() - dt.timedelta(days=offset)
        celery_dow = (day.weekday() + 1) % 7  # Celery: 0 = Sunday
        if day.month not in cron.month_of_year or day.day not in cron.day_of_month or celery_dow not in cron.day_of_week:
            continue
        best: dt.datetime | None = None
        for hour in hours:
            if offset == 0 and hour > local.hour + 1:
                continue
            for minute in minutes:
                for fold in (0, 1):
                    wall = dt.datetime(day.year, day.month, day.day, hour, minute, fold=fold, tzinfo=tz)
                    instant = wall.astimezone(UTC)
                    # A wall time that does not exist that day round-trips to
                    # another one; only its fold=0 instant counts.
                    exists = instant.astimezone(tz).replace(tzinfo=None, fold=0) == wall.replace(tzinfo=None, fold=0)
                    if not exists and fold == 1:
                        continue
                    if instant <= now_utc and (best is None or instant > best):
                        best = instant
        if best is not None:
            return best
    raise ValueError(f"crontab {cron!r} has no fire time in the 5 years before {now.isoformat()}")


def slot_for(schedule: schedules.BaseSchedule, now: dt.datetime | None = None) -> dt.datetime:
    """Return the scheduled time (aware UTC) a firing of ``schedule`` at ``now`` belongs to.

    Crontab and interval schedules as in the module docstring; a one-off
    clocked schedule's time is its ``clocked_time``. Raises TypeError for
    other kinds (solar), whose triggers then run as manual ones.
    """
    now = now or dt.datetime.now(UTC)
    clocked_time = getattr(schedule, "clocked_time", None)  # django-celery-beat's one-off ``clocked``
    if clocked_time is not None:
        return clocked_time.astimezone(UTC)
    if isinstance(schedule, schedules.crontab):
        return crontab_slot(schedule, now, schedule.tz or UTC)
    if isinstance(schedule, schedules.schedule):
        return interval_slot(schedule.run_every.total_seconds(), now)
    raise TypeError(f"schedule {schedule!r} is not supported: use a crontab or an interval schedule")


class AlignedSchedule(schedules.schedule):
    """An interval schedule whose fire times are whole multiples of the interval since the epoch.

    Stock intervals fire ``run_every`` after the last run, so every beat drifts
    on its own clock; aligned, every beat fires in the same slots (SPEC §3).
    """

    def is_due(self, last_run_at: dt.datetime) -> schedules.schedstate:
        every = self.run_every.total_seconds()
        now_ts = self.now().timestamp()
        current = math.floor(now_ts / every) * every
        last = math.floor(self.maybe_make_aware(last_run_at).timestamp() / every) * every
        remaining = max(current + every - now_ts, 0.01)
        return schedules.schedstate(current > last, remaining)
