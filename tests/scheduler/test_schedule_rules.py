"""The schedule rules of issue 8 through the real beat path: DST, start_time, pause, catch-up (SPEC §3, §9, §10).

Every test runs ``JobScheduler`` / ``JobEntry`` on the test database with the
clock controlled by time-machine, and drives it the way ``celery beat``
drives it: ask whether an entry is due; when it is, note the scheduled time
its message carries and advance the entry (beat's ``reserve``); otherwise
sleep the seconds it returned. Two drivers:

* :func:`fire_times_of` runs that loop on one ``JobEntry`` (``is_due``,
  ``scheduled_for``, ``next``): fast enough for whole DST days;
* :func:`run_beat` runs a whole ``JobScheduler`` (``tick`` sleeps what it
  returns), which publishes to a private Redis database read back by
  :class:`Broker`: the ``scheduled_for`` header is what a worker receives.

Every expected instant below was worked out by hand from the zone rules:

* America/Los_Angeles springs forward on Sunday 2026-03-08 at 02:00 PST =
  10:00Z (to 03:00 PDT) and falls back on Sunday 2026-11-01 at 02:00 PDT =
  09:00Z (to 01:00 PST). The local day of 2026-03-08 runs 08:00Z..07:00Z
  (+1 d), 23 h; that of 2026-11-01 runs 07:00Z..08:00Z (+1 d), 25 h.
* Europe/Berlin springs forward on Sunday 2026-03-29 at 02:00 CET = 01:00Z
  (to 03:00 CEST) and falls back on Sunday 2026-10-25 at 03:00 CEST = 01:00Z
  (to 02:00 CET). The local day of 2026-03-29 runs 23:00Z (-1 d)..22:00Z,
  23 h; that of 2026-10-25 runs 22:00Z (-1 d)..23:00Z, 25 h.
* An hourly crontab fires once every real hour, so over a local day it fires
  at every whole UTC hour of it: 23 times in spring, 25 in autumn (the
  skipped 02:00 maps to the end of the gap, which is 03:00's own instant).
* 2026-03-01 and 2026-11-01 are Sundays, so the Mondays around the changes
  are 2026-03-09 (LA, 09:00 PDT = 16:00Z), 2026-11-02 (LA, 09:00 PST =
  17:00Z), 2026-03-30 (Berlin, 09:00 CEST = 07:00Z) and 2026-10-26 (Berlin,
  09:00 CET = 08:00Z); 2026-11-30 is a Monday too.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import time_machine
from celery import current_app
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from audit.models import AuditLog
from contributions.services import week_bounds
from scheduler_app import beat
from scheduler_app.beat import JobEntry, JobScheduler
from scheduler_app.context import parse_iso
from scheduler_app.models import JobRun, SchedulePause
from scheduler_app.registry import get_spec
from scheduler_app.schedule_services import pause, resume, set_enabled
from scheduler_app.sync import sync_schedules
from tests.factories import make_crontab as crontab

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.UTC
#: The Redis database the schedulers under test publish to (the suite's worker consumes database 0,
#: test_beat_scheduler.py uses 9).
BROKER_DB = 10
PLAIN_TASK = "reports.tasks.build"  # a task beat sends by name: no job, no lock, catch-up `latest`
LA = "America/Los_Angeles"
BERLIN = "Europe/Berlin"


def at(text: str) -> dt.datetime:
    """``"2026-11-30 13:00:07"`` read as UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def utc_hours(first: str, last: str) -> list[dt.datetime]:
    """Every whole UTC hour from ``first`` to ``last``, both included."""
    start, end = at(first), at(last)
    return [start + dt.timedelta(hours=i) for i in range(int((end - start) / dt.timedelta(hours=1)) + 1)]


# -- schedules ----------------------------------------------------------------


def every(minutes: int) -> IntervalSchedule:
    row, _ = IntervalSchedule.objects.get_or_create(every=minutes, period=IntervalSchedule.MINUTES)
    return row


def registered_jobs_quiet() -> None:
    """Create the registry's schedules (as beat's start-up does) and switch them off, bookkeeping only.

    Beat creates them at start-up anyway; left on, they would fire during a
    long drive and, with no worker to release their locks, make every later
    trigger of theirs wait for the lock.
    """
    sync_schedules()
    PeriodicTask.objects.update(enabled=False)  # QuerySet.update: no signal, no audit, no last_run_at reset


# -- the broker and the messages in it ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    """One message as it sits in Redis (headers and kwargs decoded as a worker decodes them)."""

    task: str
    task_id: str
    kwargs: dict
    headers: dict

    @property
    def scheduled_for(self) -> dt.datetime | None:
        return parse_iso(self.headers.get("scheduled_for"))


@dataclasses.dataclass
class Broker:
    client: redis.Redis
    connection: object  # kombu Connection

    def messages(self, periodic_task: str) -> list[Sent]:
        """The messages of one ``PeriodicTask``, oldest first."""
        found = []
        for key in sorted(self.client.scan_iter()):
            if key.startswith(b"_kombu.") or self.client.type(key) != b"list":
                continue
            for raw in reversed(self.client.lrange(key, 0, -1)):  # kombu LPUSHes, workers BRPOP
                message = json.loads(raw)
                _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
                headers = message["headers"]
                found.append(Sent(task=headers["task"], task_id=headers["id"], kwargs=kwargs, headers=headers))
        return [m for m in found if m.headers.get("periodic_task_name") == periodic_task]

    def times(self, periodic_task: str) -> list[dt.datetime | None]:
        """The ``scheduled_for`` headers of one ``PeriodicTask``'s messages, oldest first."""
        return [m.scheduled_for for m in self.messages(periodic_task)]


@pytest.fixture
def app():
    celery_app = current_app._get_current_object()
    celery_app.loader.import_default_modules()  # CELERY_IMPORTS = EXTRA_JOB_MODULES = tests.jobs
    return celery_app


@pytest.fixture
def broker(app, redis_url, job_redis):
    """A private database of the test Redis as the schedulers' broker; job locks (``qo_*``) cleared before and after."""
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{BROKER_DB}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    connection = app.connection_for_write(url)
    yield Broker(client=client, connection=connection)
    connection.release()
    client.flushdb()
    client.close()
    for key in job_redis.scan_iter("qo_*"):
        job_redis.delete(key)


@pytest.fixture
def start_beat(app, broker):
    """``start_beat()`` starts a JobScheduler as ``celery beat -S django --max-interval 60`` does; ticks until idle."""
    started = []

    def start() -> JobScheduler:
        scheduler = JobScheduler(app=app, schedule_filename="celerybeat-schedule", max_interval=60, lazy=False)
        scheduler.connection = broker.connection
        started.append(scheduler)
        tick_until_idle(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.close()


def tick_until_idle(scheduler: JobScheduler, limit: int = 50) -> None:
    """Call ``tick`` until it asks to sleep, as beat's loop does without sleeping (at most one send per call)."""
    for _ in range(limit):
        if scheduler.tick() > 0:
            return
    raise AssertionError(f"beat still had due tasks after {limit} ticks")


#: The time one tick takes. Beat's loop calls tick again at once when it returns 0, which it also does
#: while waiting out Celery's 10 ms early wake-up (``Scheduler.adjust``): real time passes meanwhile.
TICK_SECONDS = 0.001


def run_beat(scheduler: JobScheduler, clock, until: dt.datetime, limit: int = 5000) -> None:
    """Beat's loop (``celery.beat.Service.start``): tick, sleep what tick returned, until ``until``."""
    for _ in range(limit):
        if timezone.now() >= until:
            return
        wait = max(scheduler.tick(), TICK_SECONDS)
        clock.shift(min(wait, (until - timezone.now()).total_seconds()))
    raise AssertionError(f"beat did not reach {until} in {limit} ticks")


def fire_times_of(app, task: PeriodicTask, start: dt.datetime, end: dt.datetime) -> list[dt.datetime | None]:
    """The scheduled times beat sends for ``task`` while the clock runs from ``start`` to ``end`` (excluded).

    Beat's loop on one entry: ``is_due``; when due, the scheduled time its
    message is stamped with (``scheduled_for``) and ``next(entry)`` (what
    ``reserve`` does); otherwise the clock jumps the seconds it returned.
    """
    fired: list[dt.datetime | None] = []
    with time_machine.travel(start, tick=False) as clock:
        entry = JobEntry(task, app=app)
        for _ in range(1000):
            now = timezone.now()
            if now >= end:
                return fired
            due, wait = entry.is_due()
            if due:
                fired.append(entry.scheduled_for(now))
                entry = next(entry)
            else:
                assert wait > 0, f"not due at {now} and no wait"
                clock.shift(wait)
    raise AssertionError(f"{task.name}: the clock did not reach {end} in 1000 steps")


# -- 1. daylight-saving time -----------------------------------------------------------

DST_CASES = {
    # id: (zone, crontab, window start, window end (excluded), expected scheduled times)
    # Los Angeles, spring forward (local day 2026-03-08 = 08:00Z..07:00Z): 00:00 and 01:00 PST, then
    # 03:00 PDT = 10:00Z (02:00 does not exist; it maps to 10:00Z, the same instant) .. 23:00 PDT = 06:00Z.
    "LA spring hourly": (LA, "0 * * * *", "2026-03-08 08:00", "2026-03-09 07:00",
                         utc_hours("2026-03-08 08:00", "2026-03-09 06:00")),
    # 02:30 and 02:00 do not exist that night: each fires once, at the end of the gap (03:00 PDT = 10:00Z).
    "LA spring 02:30": (LA, "30 2 * * *", "2026-03-08 08:00", "2026-03-09 07:00", [at("2026-03-08 10:00")]),
    "LA spring 02:00": (LA, "0 2 * * *", "2026-03-08 08:00", "2026-03-09 07:00", [at("2026-03-08 10:00")]),
    # Los Angeles, fall back (local day 2026-11-01 = 07:00Z..08:00Z next day): 00:00 PDT = 07:00Z,
    # 01:00 PDT = 08:00Z, 01:00 PST = 09:00Z, 02:00 PST = 10:00Z .. 23:00 PST = 07:00Z.
    "LA fall hourly": (LA, "0 * * * *", "2026-11-01 07:00", "2026-11-02 08:00",
                       utc_hours("2026-11-01 07:00", "2026-11-02 07:00")),
    # 01:30 occurs twice (08:30Z PDT, 09:30Z PST): a daily job runs at the first only.
    "LA fall 01:30": (LA, "30 1 * * *", "2026-11-01 07:00", "2026-11-02 08:00", [at("2026-11-01 08:30")]),
    "LA fall 02:00": (LA, "0 2 * * *", "2026-11-01 07:00", "2026-11-02 08:00", [at("2026-11-01 10:00")]),
    # Berlin, spring forward (local day 2026-03-29 = 23:00Z..22:00Z): 00:00 CET = 23:00Z, 01:00 CET = 00:00Z,
    # 03:00 CEST = 01:00Z (02:00 maps there too) .. 23:00 CEST = 21:00Z.
    "Berlin spring hourly": (BERLIN, "0 * * * *", "2026-03-28 23:00", "2026-03-29 22:00",
                             utc_hours("2026-03-28 23:00", "2026-03-29 21:00")),
    "Berlin spring 02:30": (BERLIN, "30 2 * * *", "2026-03-28 23:00", "2026-03-29 22:00", [at("2026-03-29 01:00")]),
    # Berlin, fall back (local day 2026-10-25 = 22:00Z..23:00Z): 00:00 CEST = 22:00Z, 01:00 CEST = 23:00Z,
    # 02:00 CEST = 00:00Z, 02:00 CET = 01:00Z, 03:00 CET = 02:00Z .. 23:00 CET = 22:00Z.
    "Berlin fall hourly": (BERLIN, "0 * * * *", "2026-10-24 22:00", "2026-10-25 23:00",
                           utc_hours("2026-10-24 22:00", "2026-10-25 22:00")),
    # 02:30 occurs twice (00:30Z CEST, 01:30Z CET): the first only.
    "Berlin fall 02:30": (BERLIN, "30 2 * * *", "2026-10-24 22:00", "2026-10-25 23:00", [at("2026-10-25 00:30")]),
    # The Monday summaries, over a Thursday-to-Thursday week around each change: once, Monday 09:00 local.
    "LA spring Mondays": (LA, "0 9 * * 1", "2026-03-05 00:00", "2026-03-12 00:00", [at("2026-03-09 16:00")]),
    "LA fall Mondays": (LA, "0 9 * * 1", "2026-10-29 00:00", "2026-11-05 00:00", [at("2026-11-02 17:00")]),
    "Berlin spring Mondays": (BERLIN, "0 9 * * 1", "2026-03-26 00:00", "2026-04-02 00:00", [at("2026-03-30 07:00")]),
    "Berlin fall Mondays": (BERLIN, "0 9 * * 1", "2026-10-22 00:00", "2026-10-29 00:00", [at("2026-10-26 08:00")]),
}


@pytest.mark.parametrize("case", DST_CASES)
def test_across_a_dst_change_a_crontab_fires_once_per_real_hour_or_once_per_local_day(app, case):
    zone, expression, start, end, expected = DST_CASES[case]
    # given a crontab read in `zone`, last run a second before the window (a local day or a week)
    row = PeriodicTask.objects.create(name=case, task=PLAIN_TASK, crontab=crontab(expression, tz=zone),
                                      last_run_at=at(start) - dt.timedelta(seconds=1))

    # when beat's loop runs over the window
    fired = fire_times_of(app, row, at(start) - dt.timedelta(seconds=1), at(end))

    # then it sends exactly the hand-computed scheduled times, in order
    assert fired == expected
    # (23 hourly runs on a spring-forward day, 25 on a fall-back day, one daily or weekly run)
    assert len(fired) == (23 if case.endswith("spring hourly") else 25 if case.endswith("fall hourly") else 1)


@pytest.mark.parametrize(("start", "end", "expected"), [
    # spring, 00:59:59 PST .. 03:30 PDT: hourly 01:00 PST = 09:00Z, 03:00 PDT = 10:00Z, 04:00 PDT = 11:00Z;
    # 01:30 PST = 09:30Z; 02:30 and 02:00 do not exist: both at the gap's end, 10:00Z.
    pytest.param("2026-03-08 08:59:59", "2026-03-08 11:30",
                 {"hourly": utc_hours("2026-03-08 09:00", "2026-03-08 11:00"), "daily-0130": [at("2026-03-08 09:30")],
                  "daily-0230": [at("2026-03-08 10:00")], "daily-0200": [at("2026-03-08 10:00")]}, id="spring"),
    # fall, 23:59:59 PDT .. 02:30 PST: hourly 00:00 PDT = 07:00Z, 01:00 PDT = 08:00Z, 01:00 PST = 09:00Z,
    # 02:00 PST = 10:00Z; the first 01:30 only (PDT, 08:30Z); 02:00 PST = 10:00Z; 02:30 PST = 10:30Z is the end.
    pytest.param("2026-11-01 06:59:59", "2026-11-01 10:30",
                 {"hourly": utc_hours("2026-11-01 07:00", "2026-11-01 10:00"), "daily-0130": [at("2026-11-01 08:30")],
                  "daily-0230": [], "daily-0200": [at("2026-11-01 10:00")]}, id="fall"),
])
def test_a_running_beat_sends_the_dst_night_stamped_right_and_never_crashes(start_beat, broker, start, end, expected):
    with time_machine.travel(at(start), tick=False) as clock:
        # given Los Angeles crontabs (hourly, 01:30, 02:30, 02:00) for plain tasks, last run at the window's start
        registered_jobs_quiet()
        for name, expression in (("hourly", "0 * * * *"), ("daily-0130", "30 1 * * *"),
                                 ("daily-0230", "30 2 * * *"), ("daily-0200", "0 2 * * *")):
            PeriodicTask.objects.create(name=name, task=PLAIN_TASK, crontab=crontab(expression, tz=LA),
                                        last_run_at=at(start))

        # when beat runs through the night, sleeping what each tick returns
        scheduler = start_beat()
        run_beat(scheduler, clock, at(end))

    # then every message carries the hand-computed scheduled time (and no tick raised)
    assert {name: broker.times(name) for name in expected} == expected


def test_the_issue_input_the_second_0100_of_the_fall_back_night_is_sent(settings, start_beat, broker):
    # given TIME_ZONE=America/Los_Angeles and the job schedules created from the registry in it
    settings.TIME_ZONE = LA
    with time_machine.travel(at("2026-11-01 08:00:05"), tick=False) as clock:
        registered_jobs_quiet()
        task = PeriodicTask.objects.get(name="update-group-statuses")
        assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "*", LA)
        # and update-group-statuses last run at 08:00:05Z, the 01:00 PDT run
        PeriodicTask.objects.filter(pk=task.pk).update(enabled=True, last_run_at=at("2026-11-01 08:00:05"))

        # when beat wakes at 09:00:00Z, 01:00 PST (stock Celery: "not due, 3590 s to wait")
        clock.move_to(at("2026-11-01 09:00:00"))
        start_beat()

    # then it sends the job once, for 09:00:00Z
    [message] = broker.messages("update-group-statuses")
    assert (message.task, message.scheduled_for) == (get_spec("update-group-statuses").task_name,
                                                     at("2026-11-01 09:00:00"))
    assert message.kwargs == {"trigger": "beat", "scheduled_for": "2026-11-01T09:00:00Z"}


# -- 2. start_time ---------------------------------------------------------------------


def test_a_crontab_never_runs_a_time_before_its_start_time(app, start_beat, broker):
    # given an hourly plain task that never ran, saved at 13:30:30Z with start_time = now - 1 min (13:29:30Z)
    with time_machine.travel(at("2026-11-30 13:30:30"), tick=False) as clock:
        registered_jobs_quiet()
        task = PeriodicTask.objects.create(name="starts-1329", task=PLAIN_TASK, crontab=crontab("0 * * * *"),
                                           start_time=at("2026-11-30 13:29:30"))
        # (its entry: not due, 29 min 30 s to 14:00)
        assert JobEntry(task, app=app).is_due() == (False, 1770.0)

        # when beat starts at 13:30:30Z
        scheduler = start_beat()
        # then nothing is sent (13:00 is before the start time)
        assert broker.times("starts-1329") == []

        # when it runs on to 15:00:01Z
        run_beat(scheduler, clock, at("2026-11-30 15:00:01"))

    # then the first run is 14:00:00Z, then 15:00:00Z
    assert broker.times("starts-1329") == [at("2026-11-30 14:00"), at("2026-11-30 15:00")]


@pytest.mark.parametrize(("start_time", "expected"), [
    # anchored at its start time: 13:03, 13:13, 13:23
    ("2026-11-30 13:03:00", ["2026-11-30 13:03", "2026-11-30 13:13", "2026-11-30 13:23"]),
    # no start time: whole multiples of 10 min since the epoch
    (None, ["2026-11-30 13:00", "2026-11-30 13:10", "2026-11-30 13:20"]),
])
def test_an_interval_is_anchored_at_its_start_time_or_the_epoch(start_beat, broker, start_time, expected):
    # given a plain task every 10 minutes that never ran, saved at 12:59:30Z
    with time_machine.travel(at("2026-11-30 12:59:30"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.create(name="every-10-min", task=PLAIN_TASK, interval=every(10),
                                    start_time=at(start_time) if start_time else None)

        # when beat runs from 12:59:30Z to 13:30:00Z
        scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-11-30 13:30:00"))

    # then it sends exactly these scheduled times
    assert broker.times("every-10-min") == [at(t) for t in expected]


# -- 3. pause, resume, disable, enable --------------------------------------------------


def switch_off(task: PeriodicTask, how: str) -> None:
    if how == "set_enabled":
        assert set_enabled([task], False, actor="ops") == 1
    else:
        pause(task, reason="maintenance", actor="ops")


def switch_on(task: PeriodicTask, how: str) -> None:
    if how == "set_enabled":
        assert set_enabled([task], True, actor="ops") == 1
    else:
        assert resume(task, actor="ops") is True


@pytest.mark.parametrize("how", ["set_enabled", "pause"])
@pytest.mark.parametrize("beat_while_off", ["running", "down"])
def test_switching_a_job_back_on_never_runs_a_time_that_passed_while_it_was_off(start_beat, broker, how,
                                                                               beat_while_off):
    # given an hourly plain task last run by beat at 10:00:01Z
    with time_machine.travel(at("2026-11-30 10:00:01"), tick=False) as clock:
        registered_jobs_quiet()
        task = PeriodicTask.objects.create(name="hourly", task=PLAIN_TASK, crontab=crontab("0 * * * *"),
                                           last_run_at=at("2026-11-30 09:00:01"))
        scheduler = start_beat()
        assert broker.times("hourly") == [at("2026-11-30 10:00")]
        if beat_while_off == "down":
            scheduler.close()

        # when it is switched off at 10:30Z, (beat running or down) until it is switched on at 13:36:43Z
        clock.move_to(at("2026-11-30 10:30:00"))
        switch_off(PeriodicTask.objects.get(name="hourly"), how)
        if beat_while_off == "running":
            run_beat(scheduler, clock, at("2026-11-30 13:36:43"))
        clock.move_to(at("2026-11-30 13:36:43"))
        switch_on(PeriodicTask.objects.get(name="hourly"), how)
        # and a beat (the one running, or a new one) reads the schedule and runs on to 14:00:00Z
        if beat_while_off == "down":
            clock.move_to(at("2026-11-30 13:36:45"))
            scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-11-30 13:59:59"))
        tick_until_idle(scheduler)
        # then nothing is sent before 14:00 (not 11:00, 12:00 or 13:00, which passed while it was off)
        assert broker.times("hourly") == [at("2026-11-30 10:00")]
        clock.move_to(at("2026-11-30 14:00:00"))
        tick_until_idle(scheduler)

    # and at 14:00:00Z it is sent for 14:00:00Z
    assert broker.times("hourly") == [at("2026-11-30 10:00"), at("2026-11-30 14:00")]
    assert task.pk == PeriodicTask.objects.get(name="hourly", enabled=True).pk


@pytest.mark.parametrize("beat_at_until", ["running", "down"])
def test_a_pause_with_until_resumes_by_itself_and_runs_only_later_times(start_beat, broker, monkeypatch,
                                                                       beat_at_until):
    # given beat checks for ended pauses on every tick (the 5 s between checks are real time, which the test freezes)
    monkeypatch.setattr(beat, "PAUSE_CHECK_INTERVAL_S", 0.0)
    # and an hourly plain task last run by beat at 10:00:01Z, paused at 10:30Z until 12:15Z
    with time_machine.travel(at("2026-11-30 10:00:01"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.create(name="hourly", task=PLAIN_TASK, crontab=crontab("0 * * * *"),
                                    last_run_at=at("2026-11-30 09:00:01"))
        scheduler = start_beat()
        assert broker.times("hourly") == [at("2026-11-30 10:00")]
        clock.move_to(at("2026-11-30 10:30:00"))
        pause(PeriodicTask.objects.get(name="hourly"), reason="maintenance", until=at("2026-11-30 12:15:00"),
              actor="ops")

        # when beat runs on past 12:15Z (the running one, or one started at 12:20Z after downtime)
        if beat_at_until == "running":
            run_beat(scheduler, clock, at("2026-11-30 12:20:00"))
        else:
            scheduler.close()
            clock.move_to(at("2026-11-30 12:20:00"))
            scheduler = start_beat()
        tick_until_idle(scheduler)

        # then the pause is over: the task is enabled again, with no pause row, audited as resumed by beat
        task = PeriodicTask.objects.get(name="hourly")
        assert task.enabled is True
        assert not SchedulePause.objects.filter(periodic_task=task).exists()
        resumed = AuditLog.objects.get(action="SCHEDULE_RESUMED", entity_id="hourly")
        assert resumed.metadata["actor"] == "beat (pause until 2026-11-30T12:15:00Z reached)"
        # and 11:00 and 12:00, which passed during the pause, are not sent
        assert broker.times("hourly") == [at("2026-11-30 10:00")]

        # when beat runs on to 13:00:01Z
        run_beat(scheduler, clock, at("2026-11-30 13:00:01"))

    # then the first time after the resume, 13:00Z, is sent
    assert broker.times("hourly") == [at("2026-11-30 10:00"), at("2026-11-30 13:00")]


AUDITED = {
    # operation: (enabled before, what is done, action, diff of `enabled`)
    "disable": (True, lambda t: set_enabled([t], False, actor="ops"), "SCHEDULE_DISABLED", ["True", "False"]),
    "enable": (False, lambda t: set_enabled([t], True, actor="ops"), "SCHEDULE_ENABLED", ["False", "True"]),
    "pause": (True, lambda t: pause(t, reason="maintenance", actor="ops"), "SCHEDULE_PAUSED", ["True", "False"]),
    "resume": (False, lambda t: resume(t, actor="ops"), "SCHEDULE_RESUMED", ["False", "True"]),
}


@pytest.mark.parametrize("operation", [
    "disable",
    "enable",
    "pause",
    "resume",
])
def test_each_switch_writes_one_audit_log_with_the_before_and_after_of_enabled(operation):
    enabled_before, operate, action, diff = AUDITED[operation]
    # given an hourly plain task, enabled or disabled (a disabled one to resume has its pause)
    with time_machine.travel(at("2026-11-30 10:30:00"), tick=False):
        task = PeriodicTask.objects.create(name="hourly", task=PLAIN_TASK, crontab=crontab("0 * * * *"))
        if not enabled_before:
            if operation == "resume":
                pause(task, reason="maintenance", actor="setup")
            else:
                set_enabled([task], False, actor="setup")
        task = PeriodicTask.objects.get(pk=task.pk)
        assert task.enabled is enabled_before
        logs_before = set(AuditLog.objects.values_list("pk", flat=True))

        # when the operation is done by "ops"
        operate(task)

    # then exactly one audit log is written: the action, the task, and `enabled` before and after
    [log] = AuditLog.objects.exclude(pk__in=logs_before)
    assert (log.action, log.entity_type, log.entity_id) == (action, "periodic_task", "hourly")
    assert log.metadata["diff"] == {"enabled": diff}
    assert log.metadata["actor"] == "ops"
    assert PeriodicTask.objects.get(pk=task.pk).enabled is (diff[1] == "True")


# -- 4. catch-up after beat downtime ----------------------------------------------------


def hourly_job_down_since_10(job: str) -> None:
    """Job ``job``'s schedule (created from the registry) made hourly (UTC), last run at 10:00:02Z; other jobs off."""
    registered_jobs_quiet()
    PeriodicTask.objects.filter(name=job).update(crontab=crontab("0 * * * *"), enabled=True,
                                                 last_run_at=at("2026-11-30 10:00:02"))


def finish_runs(app, broker: Broker, job: str) -> None:
    """What a worker does for each sent message of ``job``: record its run as done, then release its lock."""
    task = app.tasks[get_spec(job).task_name]
    for message in broker.messages(job):
        if JobRun.objects.filter(task_id=message.task_id).exists():
            continue
        run = JobRun.objects.begin(job=job, existing=None, task_id=message.task_id, trigger="beat",
                                   scheduled_for=message.scheduled_for, attempt=1, dry_run=False)
        assert run is not None
        JobRun.objects.finish(run, JobRun.Status.SUCCEEDED, items=1)
        assert task.once_backend.clear_lock(get_spec(job).lock_key, token=message.task_id)


def test_catch_up_latest_sends_only_the_latest_missed_time(start_beat, broker):
    # given the test job (catch-up `latest`, the default) hourly, last run at 10:00:02Z, and beat down since
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        hourly_job_down_since_10("test-noop")

        # when beat comes back at 13:20:00Z and runs a minute
        scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-11-30 13:21:00"))

    # then it has sent exactly one message, for 13:00:00Z (not 11:00 or 12:00)
    [message] = broker.messages("test-noop")
    assert message.scheduled_for == at("2026-11-30 13:00")
    assert message.kwargs["scheduled_for"] == "2026-11-30T13:00:00Z"


def test_catch_up_skip_sends_nothing_missed_also_after_a_restart_and_then_the_next_time(start_beat, broker):
    # given a job with catch-up `skip` hourly, last run at 10:00:02Z, and beat down since
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        hourly_job_down_since_10("test-catchup-skip")

        # when beat comes back at 13:20:00Z
        scheduler = start_beat()
        # then it sends nothing
        assert broker.times("test-catchup-skip") == []
        # and the database no longer shows 13:00 as due
        assert PeriodicTask.objects.get(name="test-catchup-skip").last_run_at >= at("2026-11-30 13:00")

        # when that beat stops and another starts at 13:20:10Z
        scheduler.close()
        clock.move_to(at("2026-11-30 13:20:10"))
        scheduler = start_beat()
        # then it sends nothing either
        assert broker.times("test-catchup-skip") == []

        # when it runs on to 14:00:01Z
        run_beat(scheduler, clock, at("2026-11-30 14:00:01"))

    # then the next time, 14:00:00Z, is sent
    assert broker.times("test-catchup-skip") == [at("2026-11-30 14:00")]


def test_catch_up_all_sends_each_missed_time_oldest_first_one_at_a_time(app, start_beat, broker):
    job = "test-catchup-all"
    # given a job with catch-up `all` (limit 10) hourly, last run at 10:00:02Z, beat down since, no worker
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        hourly_job_down_since_10(job)

        # when beat comes back at 13:20:00Z and runs 10 s
        scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-11-30 13:20:10"))
        # then it has sent 11:00 only: the send holds the job's lock until the run ends
        assert broker.times(job) == [at("2026-11-30 11:00")]

        # when the 11:00 run ends and beat runs 10 s more
        finish_runs(app, broker, job)
        run_beat(scheduler, clock, at("2026-11-30 13:20:20"))
        # then 12:00 follows, alone
        assert broker.times(job) == [at("2026-11-30 11:00"), at("2026-11-30 12:00")]

        # when that run ends too and beat runs on
        finish_runs(app, broker, job)
        run_beat(scheduler, clock, at("2026-11-30 13:20:30"))
        assert broker.times(job) == [at("2026-11-30 11:00"), at("2026-11-30 12:00"), at("2026-11-30 13:00")]
        finish_runs(app, broker, job)
        run_beat(scheduler, clock, at("2026-11-30 14:00:01"))

    # then 13:00 came last of the missed times, nothing was sent twice, and 14:00 ran on time
    assert broker.times(job) == [at("2026-11-30 11:00"), at("2026-11-30 12:00"), at("2026-11-30 13:00"),
                                 at("2026-11-30 14:00")]
    # and beat never tried to send while the lock was held (a refused trigger leaves a SKIPPED run)
    assert set(JobRun.objects.filter(job=job).values_list("status", flat=True)) == {"SUCCEEDED"}


def test_catch_up_all_never_sends_a_time_that_already_has_a_working_run(app, start_beat, broker):
    job = "test-catchup-all"
    # given the `all` job hourly, last run by beat at 10:00:02Z, beat down since, and 12:00 run meanwhile
    # (e.g. `run_job --scheduled-for 2026-11-30T12:00:00Z --local`): a SUCCEEDED run of 12:00
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        hourly_job_down_since_10(job)
        run = JobRun.objects.begin(job=job, existing=None, task_id="by-hand", trigger="beat",
                                   scheduled_for=at("2026-11-30 12:00"), attempt=1, dry_run=False)
        assert run is not None
        JobRun.objects.finish(run, JobRun.Status.SUCCEEDED, items=1)

        # when beat comes back at 13:20:00Z, with each sent run ending before the next tick
        scheduler = start_beat()
        for second in (10, 20, 30):
            finish_runs(app, broker, job)
            run_beat(scheduler, clock, at(f"2026-11-30 13:20:{second}"))

    # then it sends 11:00 and 13:00, never 12:00
    assert broker.times(job) == [at("2026-11-30 11:00"), at("2026-11-30 13:00")]


def test_catch_up_all_with_limit_2_sends_the_two_latest_missed_times(app, start_beat, broker):
    job = "test-catchup-all-2"
    # given a job with catch-up `all`, limit 2, hourly, last run at 10:00:02Z, and beat down since
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        hourly_job_down_since_10(job)

        # when beat comes back at 13:20:00Z, with each sent run ending before the next tick
        scheduler = start_beat()
        for second in (10, 20, 30):
            finish_runs(app, broker, job)
            run_beat(scheduler, clock, at(f"2026-11-30 13:20:{second}"))

    # then it sends 12:00 and 13:00 only
    assert broker.times(job) == [at("2026-11-30 12:00"), at("2026-11-30 13:00")]


@pytest.mark.parametrize(("how", "back_on", "expected"), [
    # paused at 10:30, resumed at 11:30: 11:00 passed while paused; 12:00 and 13:00 while beat was down
    ("pause", "2026-11-30 11:30:00", ["2026-11-30 12:00", "2026-11-30 13:00"]),
    # disabled at 10:30, enabled at 12:30: only 13:00 passed while it was on and beat down
    ("set_enabled", "2026-11-30 12:30:00", ["2026-11-30 13:00"]),
])
def test_catch_up_all_never_runs_a_time_that_passed_while_the_job_was_off(app, start_beat, broker, how, back_on,
                                                                          expected):
    job = "test-catchup-all"
    # given the `all` job hourly, last run at 10:00:02Z, beat down since, switched off at 10:30Z and on at `back_on`
    with time_machine.travel(at("2026-11-30 10:30:00"), tick=False) as clock:
        hourly_job_down_since_10(job)
        switch_off(PeriodicTask.objects.get(name=job), how)
        clock.move_to(at(back_on))
        switch_on(PeriodicTask.objects.get(name=job), how)

        # when beat comes back at 13:20:00Z, with each sent run ending before the next tick
        clock.move_to(at("2026-11-30 13:20:00"))
        scheduler = start_beat()
        for second in (10, 20, 30):
            finish_runs(app, broker, job)
            run_beat(scheduler, clock, at(f"2026-11-30 13:20:{second}"))

    # then only the missed times after it was switched on are sent, oldest first
    assert broker.times(job) == [at(t) for t in expected]


def test_catch_up_all_across_the_fall_back_night_sends_both_0100s(app, start_beat, broker):
    job = "test-catchup-all"
    # given the `all` job hourly in Los Angeles, last run at 07:00:02Z (00:00 PDT), and beat down since
    with time_machine.travel(at("2026-11-01 10:20:00"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.filter(name=job).update(crontab=crontab("0 * * * *", tz=LA), enabled=True,
                                                     last_run_at=at("2026-11-01 07:00:02"))

        # when beat comes back at 10:20:00Z (02:20 PST), with each sent run ending before the next tick
        scheduler = start_beat()
        for second in (10, 20, 30, 40):
            finish_runs(app, broker, job)
            run_beat(scheduler, clock, at(f"2026-11-01 10:20:{second}"))

    # then it sends 01:00 PDT (08:00Z), 01:00 PST (09:00Z) and 02:00 PST (10:00Z), in that order
    assert broker.times(job) == [at("2026-11-01 08:00"), at("2026-11-01 09:00"), at("2026-11-01 10:00")]


def test_a_pause_that_ended_while_beat_was_down_leaves_later_missed_times_to_the_catch_up_policy(start_beat,
                                                                                               broker):
    # given an hourly plain task (catch-up `latest`) last run by beat at 10:00:01Z, paused at 10:30Z until 12:15Z,
    # and beat down from 10:30Z
    with time_machine.travel(at("2026-11-30 10:00:01"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.create(name="hourly", task=PLAIN_TASK, crontab=crontab("0 * * * *"),
                                    last_run_at=at("2026-11-30 09:00:01"))
        scheduler = start_beat()
        clock.move_to(at("2026-11-30 10:30:00"))
        pause(PeriodicTask.objects.get(name="hourly"), reason="maintenance", until=at("2026-11-30 12:15:00"),
              actor="ops")
        scheduler.close()

        # when beat comes back at 13:20Z (the pause ended at 12:15Z; 13:00 passed while beat was down) and runs
        # 6 minutes (its first tick resumes the pause; it reads the resumed task by its 5-minute full re-read)
        clock.move_to(at("2026-11-30 13:20:00"))
        scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-11-30 13:26:00"))

    # then 13:00 is caught up (`latest`); 11:00 and 12:00, inside the pause, are not
    assert broker.times("hourly") == [at("2026-11-30 10:00"), at("2026-11-30 13:00")]


# -- 5. the Monday summaries caught up on Tuesday ------------------------------------------


def test_summaries_caught_up_on_tuesday_carry_mondays_scheduled_time(start_beat, broker):
    job = "send-contribution-summaries"
    # given the summaries job (Mondays 09:00, TIME_ZONE UTC, catch-up `latest`) last run Monday 2026-11-23
    # at 09:00:03Z, and beat down from Monday 2026-11-30 08:00Z
    with time_machine.travel(at("2026-11-30 08:00:00"), tick=False) as clock:
        registered_jobs_quiet()
        task = PeriodicTask.objects.get(name=job)
        assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "9", "1")
        PeriodicTask.objects.filter(pk=task.pk).update(enabled=True, last_run_at=at("2026-11-23 09:00:03"))

        # when beat comes back on Tuesday 2026-12-01 at 10:00Z and runs a minute
        clock.move_to(at("2026-12-01 10:00:00"))
        scheduler = start_beat()
        run_beat(scheduler, clock, at("2026-12-01 10:01:00"))

    # then it sends the job once, stamped Monday 09:00, the time the job picks its week from
    [message] = broker.messages(job)
    assert message.scheduled_for == at("2026-11-30 09:00")
    assert message.kwargs == {"trigger": "beat", "scheduled_for": "2026-11-30T09:00:00Z"}
    assert week_bounds(now=message.scheduled_for) == (at("2026-11-23 00:00"), at("2026-11-30 00:00"))


def tick_with_a_worker(app, scheduler: JobScheduler, broker: Broker, job: str, ticks: int) -> None:
    """``ticks`` beat ticks at a frozen clock, each sent run ended (lock released) before the next tick."""
    for _ in range(ticks):
        scheduler.tick()
        finish_runs(app, broker, job)


def test_a_late_tick_sends_every_time_still_within_the_grace_oldest_first(app, start_beat, broker):
    job = "test-noop"
    # given test-noop every minute (grace 300 s), last sent for 10:00:00Z, and this beat's next tick 3.5
    # minutes late (it was held up while another beat restarted); 10:02 was sent by the other beat and
    # refused by the engine (a SKIPPED run: its trigger came)
    with time_machine.travel(at("2026-11-30 10:00:30"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.filter(name=job).update(crontab=None, interval=every(1), enabled=True,
                                                     last_run_at=at("2026-11-30 10:00:00"))
        JobRun.objects.create(job=job, trigger="beat", scheduled_for=at("2026-11-30 10:02"), status="SKIPPED",
                              skip_reason="lock_held", started_at=at("2026-11-30 10:02:01"), task_id="other-beat")
        scheduler = start_beat()
        # when its next ticks come at 10:03:30Z
        clock.move_to(at("2026-11-30 10:03:30"))
        tick_with_a_worker(app, scheduler, broker, job, 5)
    # then 10:01 and 10:03 are sent, oldest first, each once; 10:02 is not sent again
    assert broker.times(job) == [at("2026-11-30 10:01"), at("2026-11-30 10:03")]


def test_after_downtime_longer_than_the_grace_the_catch_up_policy_decides_also_for_recent_times(
        app, start_beat, broker):
    job = "test-noop"
    # given test-noop every minute (catch-up latest), last sent for 10:00:00Z, and the next tick at 10:07:30Z:
    # 10:01 and 10:02 are older than the 300 s grace, so beat was down, not late
    with time_machine.travel(at("2026-11-30 10:00:30"), tick=False) as clock:
        registered_jobs_quiet()
        PeriodicTask.objects.filter(name=job).update(crontab=None, interval=every(1), enabled=True,
                                                     last_run_at=at("2026-11-30 10:00:00"))
        scheduler = start_beat()
        clock.move_to(at("2026-11-30 10:07:30"))
        tick_with_a_worker(app, scheduler, broker, job, 8)
    # then the policy `latest` decides: the latest time alone, as after any beat downtime
    assert broker.times(job) == [at("2026-11-30 10:07")]
