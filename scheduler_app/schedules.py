"""Scheduled times: when a schedule fires, and which fire time a message belongs to (SPEC §3, §10).

Every beat must compute the same scheduled time for one firing, whatever
moment it woke up, so the time comes from the schedule, not from the clock:

* crontab: the latest fire time at or before now, read in the schedule's
  time zone (``TIME_ZONE``), to the minute;
* interval: the latest whole multiple of the interval since the Unix epoch
  (or since the task's ``start_time`` when it has one);
* clocked (one-off): its clocked time.

Daylight-saving time (the README's "Schedules" section), for a crontab read
in a zone with DST:

* a wall time that occurs twice (clocks go back) fires at its first instant
  only, unless the crontab fires every hour (hour field ``*``), which then
  fires at both: an hourly job runs once every real hour (25 runs on the
  fall-back day), a daily 01:30 job once that day;
* a wall time that does not exist (clocks go forward) fires at the first
  instant after the gap (03:00 local for a skipped 02:30), so a daily job
  still runs once that day; a crontab that fires every hour skips it, so an
  hourly job (``0 * * * *`` or ``15 * * * *``) runs once every real hour,
  23 times.

All instants are aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

from celery import schedules

UTC = dt.UTC

#: How far fire-time searches look back or ahead, in days (5 years).
SEARCH_DAYS = 366 * 5

#: The five crontab fields in order, with what each allows (for error messages).
CRONTAB_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day_of_month", "1-31"),
    ("month_of_year", "1-12"),
    ("day_of_week", "0-6 (0 = Sunday) or sun-sat"),
)

_PARSERS = {
    "minute": lambda v: schedules.crontab_parser(60).parse(v),
    "hour": lambda v: schedules.crontab_parser(24).parse(v),
    "day_of_month": lambda v: schedules.crontab_parser(31, 1).parse(v),
    "month_of_year": lambda v: schedules.crontab_parser(12, 1).parse(v),
    "day_of_week": lambda v: schedules.crontab._expand_cronspec(v, 7),
}


def validate_crontab_fields(minute: str, hour: str, day_of_month: str, month_of_year: str, day_of_week: str,
                            *, tz: dt.tzinfo = UTC) -> schedules.crontab:
    """Check five crontab fields one by one and that the crontab fires at all; return the Celery crontab.

    Args:
        minute, hour, day_of_month, month_of_year, day_of_week: the fields as
            django-celery-beat's ``CrontabSchedule`` stores them.
        tz: the zone the crontab is read in.
    Raises:
        ValueError: naming the field, its value and what is allowed (e.g.
            ``day_of_week '7' is invalid: 0-6 (0 = Sunday) or sun-sat; use 0 for Sunday``),
            or saying that the crontab never fires (``day_of_month '31' never occurs in
            month_of_year '2'``; or no fire time in the next 5 years).
    """
    values = {"minute": minute, "hour": hour, "day_of_month": day_of_month, "month_of_year": month_of_year,
              "day_of_week": day_of_week}
    for field, allowed in CRONTAB_FIELDS:
        value = str(values[field]).strip()
        try:
            parsed = _PARSERS[field](value)
        except Exception as exc:  # celery's ParseException, ValueError
            hint = "; use 0 for Sunday" if field == "day_of_week" and "7" in value.replace("17", "") else ""
            raise ValueError(f"{field} {value!r} is invalid: {allowed}{hint} ({exc})") from None
        if not parsed:
            raise ValueError(f"{field} {value!r} is invalid: it selects nothing; allowed {allowed}")
    try:
        cron = schedules.crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                                 month_of_year=month_of_year, day_of_week=day_of_week)
    except ValueError as exc:  # "Invalid crontab: day_of_month '31' never occurs in month_of_year '2'."
        raise ValueError(str(exc).removeprefix("Invalid crontab: ").rstrip(".")) from None
    if next_crontab_time(cron, dt.datetime.now(UTC), tz) is None:
        raise ValueError(f"crontab '{minute} {hour} {day_of_month} {month_of_year} {day_of_week}' has no fire time "
                         "in the next 5 years (day_of_month, month_of_year and day_of_week must all match)")
    return cron


def parse_crontab(expression: str, *, tz: dt.tzinfo = UTC) -> schedules.crontab:
    """Build a Celery crontab from ``"minute hour day_of_month month_of_year day_of_week"``.

    Raises:
        ValueError: naming the expression, when it does not have five fields,
            a field is out of range, or it never fires (see :func:`validate_crontab_fields`).
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"crontab {expression!r} is invalid: it needs 5 fields "
                         "(minute hour day_of_month month_of_year day_of_week)")
    try:
        return validate_crontab_fields(*fields, tz=tz)
    except ValueError as exc:
        raise ValueError(f"crontab {expression!r} is invalid: {exc}") from None


def interval_slot(every_seconds: float, now: dt.datetime, *, anchor: dt.datetime | None = None) -> dt.datetime:
    """The latest ``anchor + k * every_seconds`` at or before ``now`` (UTC); ``anchor`` defaults to the Unix epoch."""
    base = anchor.timestamp() if anchor is not None else 0.0
    ts = now.timestamp()
    return dt.datetime.fromtimestamp(base + math.floor((ts - base) / every_seconds) * every_seconds, tz=UTC)


def _day_matches(cron: schedules.crontab, day: dt.date) -> bool:
    celery_dow = (day.weekday() + 1) % 7  # Celery: 0 = Sunday
    return day.month in cron.month_of_year and day.day in cron.day_of_month and celery_dow in cron.day_of_week


def _gap_end(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The first instant (UTC, whole minute) after the DST gap that swallowed the naive wall time ``wall``."""
    earlier = min(wall.replace(tzinfo=tz, fold=0).astimezone(UTC), wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    moment = earlier.replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        if moment.astimezone(tz).replace(tzinfo=None) >= wall:
            return moment
        moment += dt.timedelta(minutes=1)
    raise ValueError(f"no end found for the gap around {wall} in {tz}")  # pragma: no cover - no such zone


def crontab_times_on(cron: schedules.crontab, day: dt.date, tz: dt.tzinfo,
                     hours: set[int] | None = None) -> list[dt.datetime]:
    """The instants (aware UTC, sorted) at which ``cron`` fires on local date ``day`` in ``tz``.

    DST rules as in the module docstring. ``hours`` limits the local hours
    looked at (an optimisation; None: all of the crontab's hours).
    """
    if not _day_matches(cron, day):
        return []
    every_hour = len(cron.hour) == 24
    instants: set[dt.datetime] = set()
    for hour in cron.hour if hours is None else cron.hour & hours:
        for minute in cron.minute:
            wall = dt.datetime(day.year, day.month, day.day, hour, minute)  # noqa: DTZ001 - a wall time, read in tz below
            first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
            if first.astimezone(tz).replace(tzinfo=None) != wall:  # skipped by the clocks going forward
                if not every_hour:  # an hourly job simply has one hour fewer that day
                    instants.add(_gap_end(wall, tz))
                continue
            instants.add(first)
            second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
            if every_hour and second != first:  # the hour that repeats, for a job that runs every hour
                instants.add(second)
    return sorted(instants)


def crontab_slot(cron: schedules.crontab, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The latest fire time of ``cron`` (read in ``tz``) at or before ``now``, as an aware UTC datetime.

    Follows Celery's crontab semantics (a day must match day_of_month,
    month_of_year and day_of_week together) and the DST rules of the module
    docstring.

    Raises:
        ValueError: the crontab never fired in the last 5 years (e.g. 30 February).
    """
    now_utc = now.astimezone(UTC)
    today = now_utc.astimezone(tz).date()
    for offset in range(-1, SEARCH_DAYS):
        day = today - dt.timedelta(days=offset)
        earlier = [t for t in crontab_times_on(cron, day, tz) if t <= now_utc]
        if earlier:
            return earlier[-1]
    raise ValueError(f"crontab {cron!r} has no fire time in the 5 years before {now.isoformat()}")


def next_crontab_time(cron: schedules.crontab, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first fire time of ``cron`` (read in ``tz``) strictly after ``after``; None when none in 5 years."""
    after_utc = after.astimezone(UTC)
    start = after_utc.astimezone(tz).date() - dt.timedelta(days=1)
    for offset in range(SEARCH_DAYS + 1):
        later = [t for t in crontab_times_on(cron, start + dt.timedelta(days=offset), tz) if t > after_utc]
        if later:
            return later[0]
    return None


def _interval_anchor(schedule: schedules.BaseSchedule) -> dt.datetime | None:
    return getattr(schedule, "anchor", None)


def slot_for(schedule: schedules.BaseSchedule, now: dt.datetime | None = None) -> dt.datetime:
    """Return the scheduled time (aware UTC) a firing of ``schedule`` at ``now`` belongs to.

    Crontab and interval schedules as in the module docstring; a one-off
    clocked schedule's time is its ``clocked_time``.

    Raises:
        TypeError: other kinds (solar), whose triggers then run as manual ones.
        ValueError: a crontab that never fired in the last 5 years.
    """
    now = now or dt.datetime.now(UTC)
    clocked_time = getattr(schedule, "clocked_time", None)  # django-celery-beat's one-off ``clocked``
    if clocked_time is not None:
        return clocked_time.astimezone(UTC)
    if isinstance(schedule, schedules.crontab):
        return crontab_slot(schedule, now, schedule.tz or UTC)
    if isinstance(schedule, schedules.schedule):
        return interval_slot(schedule.run_every.total_seconds(), now, anchor=_interval_anchor(schedule))
    raise TypeError(f"schedule {schedule!r} is not supported: use a crontab or an interval schedule")


def fire_times(schedule: schedules.BaseSchedule, after: dt.datetime) -> Iterator[dt.datetime]:
    """The fire times of ``schedule`` strictly after ``after``, in order (aware UTC; endless for crontab and interval).

    Raises:
        TypeError: a schedule kind without fire times (solar).
    """
    clocked_time = getattr(schedule, "clocked_time", None)
    if clocked_time is not None:
        if clocked_time > after:
            yield clocked_time.astimezone(UTC)
        return
    if isinstance(schedule, schedules.crontab):
        moment: dt.datetime | None = after
        while moment is not None:
            moment = next_crontab_time(schedule, moment, schedule.tz or UTC)
            if moment is not None:
                yield moment
        return
    if isinstance(schedule, schedules.schedule):
        every = schedule.run_every.total_seconds()
        slot = interval_slot(every, after, anchor=_interval_anchor(schedule))
        while True:
            slot += dt.timedelta(seconds=every)
            yield slot
    raise TypeError(f"schedule {schedule!r} has no fire times: use a crontab, an interval or a clocked schedule")


def next_fire_times(schedule: schedules.BaseSchedule, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` fire times of ``schedule`` strictly after ``after`` (fewer when it stops firing)."""
    times: list[dt.datetime] = []
    for moment in fire_times(schedule, after):
        times.append(moment)
        if len(times) == count:
            break
    return times


def fire_times_between(schedule: schedules.BaseSchedule, start: dt.datetime, end: dt.datetime,
                       limit: int = 10_000) -> list[dt.datetime]:
    """The fire times in ``(start, end]`` in order, at most ``limit`` (the earliest ones)."""
    times: list[dt.datetime] = []
    for moment in fire_times(schedule, start):
        if moment > end or len(times) == limit:
            break
        times.append(moment)
    return times


class AlignedSchedule(schedules.schedule):
    """An interval schedule whose fire times are whole multiples of the interval since an anchor.

    The anchor is the Unix epoch, or the task's ``start_time`` when it has
    one. Stock intervals fire ``run_every`` after the last run, so every beat
    drifts on its own clock; aligned, every beat fires in the same slots (SPEC §3).
    """

    def __init__(self, run_every=None, relative=False, nowfun=None, app=None, anchor: dt.datetime | None = None):
        super().__init__(run_every=run_every, relative=relative, nowfun=nowfun, app=app)
        self.anchor = anchor

    def is_due(self, last_run_at: dt.datetime) -> schedules.schedstate:
        every = self.run_every.total_seconds()
        now = self.now()
        current = interval_slot(every, now, anchor=self.anchor)
        last = interval_slot(every, self.maybe_make_aware(last_run_at), anchor=self.anchor)
        remaining = max((current.timestamp() + every) - now.timestamp(), 0.01)
        return schedules.schedstate(current > last, remaining)
