"""``JobScheduler`` and ``JobEntry`` as classes: what beat sends, and when (SPEC §3, §10).

The scheduler is built the way ``celery beat`` builds it
(``Service.get_scheduler``: ``JobScheduler(app=..., schedule_filename=...,
max_interval=..., lazy=False)``) on the test database, with the clock frozen
by time-machine. It publishes through a real kombu producer to a private
database of the test Redis (see :func:`broker`), and the tests read the
messages back from the Redis lists they landed in: what a worker would
receive, with no broker mock.

Instants used below, worked out by hand:

* 1_790_000_000 s since the epoch is 2026-09-21T14:13:20Z (20_717 days of
  86_400 s, then 14 h 13 min 20 s), so 1_790_000_003.5 is 14:13:23.5Z; its
  1 s slot is 14:13:23Z, its 10 s slot 14:13:20Z (1_790_000_000) and its
  60 s slot 14:13:00Z (1_789_999_980 = 29_833_333 x 60).
* 2026-11-30 is a Monday; Europe/Berlin is UTC+1 then (CET) and UTC+2 on
  2026-07-01 (CEST).
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
from django_celery_beat.models import ClockedSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry
from kombu import Exchange, Queue

from scheduler_app.beat import JobEntry, JobScheduler
from scheduler_app.models import JobRun
from tests.factories import make_crontab as crontab

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.UTC
#: The Redis database the scheduler under test publishes to (the suite's worker consumes database 0).
BROKER_DB = 9
#: kombu's Redis transport keeps queue Q's messages of priority step p > 0 in the list "Q<sep>p".
PRIORITY_SEP = "\x06\x16"
JOB_TASK = "tests.jobs.noop_job"  # the test job ``test-noop`` (tests/jobs.py, via EXTRA_JOB_MODULES)
REGISTERED_TASK = "celery.backend_cleanup"  # a plain task registered in the app, not a job
UNREGISTERED_TASK = "reports.tasks.build"  # a task name beat sends by name (``send_task``)


def at(text: str) -> dt.datetime:
    """``"2026-11-30 13:00:07"`` read as UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def epoch(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=UTC)


# -- the broker and the messages in it ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    """One message as it sits in Redis, decoded the way a worker decodes it."""

    queue: str  # the queue it landed in (the Redis list, without kombu's priority suffix)
    task: str
    task_id: str
    args: list
    kwargs: dict
    headers: dict
    exchange: str
    routing_key: str
    priority: int | None

    @property
    def periodic_task(self) -> str | None:
        return self.headers.get("periodic_task_name")

    @property
    def scheduled_for(self) -> str | None:
        return self.headers.get("scheduled_for")


@dataclasses.dataclass
class Broker:
    url: str
    client: redis.Redis
    connection: object  # kombu Connection

    def messages(self, periodic_task: str | None = None) -> list[Sent]:
        """Every message published so far (of one ``PeriodicTask`` when named), oldest first per queue."""
        found = []
        for key in sorted(self.client.scan_iter()):
            if key.startswith(b"_kombu.") or self.client.type(key) != b"list":
                continue
            for raw in reversed(self.client.lrange(key, 0, -1)):  # kombu LPUSHes, workers BRPOP
                message = json.loads(raw)
                args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
                props = message["properties"]
                headers = message["headers"]
                found.append(Sent(
                    queue=key.decode().split(PRIORITY_SEP)[0], task=headers["task"], task_id=headers["id"],
                    args=args, kwargs=kwargs, headers=headers,
                    exchange=props["delivery_info"]["exchange"], routing_key=props["delivery_info"]["routing_key"],
                    priority=props.get("priority"),
                ))
        if periodic_task is not None:
            found = [m for m in found if m.periodic_task == periodic_task]
        return found

    def only_message(self, periodic_task: str) -> Sent:
        messages = self.messages(periodic_task)
        assert len(messages) == 1, messages
        return messages[0]


@pytest.fixture
def app():
    """The project's Celery app, with the task modules imported as ``celery beat`` does at start-up."""
    celery_app = current_app._get_current_object()
    celery_app.loader.import_default_modules()  # CELERY_IMPORTS = EXTRA_JOB_MODULES = tests.jobs
    assert JOB_TASK in celery_app.tasks and REGISTERED_TASK in celery_app.tasks
    assert UNREGISTERED_TASK not in celery_app.tasks
    return celery_app


@pytest.fixture
def broker(app, redis_url, job_redis):
    """A private database of the test Redis as the scheduler's broker, empty before and after.

    ``job_redis`` removes the job locks (``qo_*``) first, so the test job's
    trigger is never refused because of an earlier test; they are removed
    again afterwards (a sent trigger holds its lock until a worker runs it).
    """
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{BROKER_DB}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    connection = app.connection_for_write(url)
    yield Broker(url=url, client=client, connection=connection)
    connection.release()
    client.flushdb()
    client.close()
    for key in job_redis.scan_iter("qo_*"):
        job_redis.delete(key)


@pytest.fixture
def start_beat(app, broker, transactional_db):
    """``start_beat()`` starts a JobScheduler as ``celery beat`` does, publishing to ``broker``.

    Like beat's ``Service.start``, it ticks at once until nothing is due.
    ``start_beat(lazy=True)`` only builds it, without ``setup_schedule`` (as
    beat does for introspection) and without ticking.
    """
    started = []

    def start(*, lazy: bool = False) -> JobScheduler:
        scheduler = JobScheduler(app=app, schedule_filename="celerybeat-schedule", max_interval=5, lazy=lazy)
        scheduler.connection = broker.connection  # its producer is built on this connection
        started.append(scheduler)
        if not lazy:
            tick_until_idle(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.close()  # writes the last run times while the test database exists


def tick_until_idle(scheduler: JobScheduler, limit: int = 50) -> None:
    """Call ``tick`` until it asks to sleep (it sends at most one due task per call)."""
    for _ in range(limit):
        if scheduler.tick() > 0:
            return
    raise AssertionError(f"beat still had due tasks after {limit} ticks")


# -- schedules ----------------------------------------------------------------


def interval(seconds: int) -> IntervalSchedule:
    row, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return row


def clocked(when: dt.datetime) -> ClockedSchedule:
    return ClockedSchedule.objects.create(clocked_time=when)


def periodic_task(name: str, task: str, **fields) -> PeriodicTask:
    return PeriodicTask.objects.create(name=name, task=task, **fields)


# -- start-up -------------------------------------------------------------------------


def test_starting_beat_creates_missing_job_schedules_and_keeps_edited_ones(start_beat):
    with time_machine.travel(at("2026-11-30 01:30:00"), tick=False):
        # given the hourly job's schedule edited in the admin to half past, and no other schedule
        periodic_task("update-group-statuses", "groups.tasks.update_group_statuses_task", crontab=crontab("30 * * * *"))

        # when a scheduler is built lazily (as beat does for introspection)
        start_beat(lazy=True)
        # then it writes nothing
        assert list(PeriodicTask.objects.values_list("name", flat=True)) == ["update-group-statuses"]

        # when beat starts at 01:30Z
        scheduler = start_beat()

        # then beat's first read of the schedule already has the jobs it created (django-celery-beat
        # reads the crontabs whose hour is within 2 h of now: 02:00 and 00:00 at 01:30)
        assert {"archive-audit-logs", "test-noop", "update-group-statuses"} <= set(scheduler.schedule)

    # and the other jobs' schedules exist, in TIME_ZONE (UTC here)
    archive = PeriodicTask.objects.get(name="archive-audit-logs")
    assert (str(archive.crontab), archive.crontab.timezone.key) == ("0 2 * * * (m/h/dM/MY/d) UTC", "UTC")
    assert str(PeriodicTask.objects.get(name="send-contribution-summaries").crontab) == "0 9 * * 1 (m/h/dM/MY/d) UTC"
    # and the edited one keeps its half past
    assert str(PeriodicTask.objects.get(name="update-group-statuses").crontab) == "30 * * * * (m/h/dM/MY/d) UTC"


# -- every message carries its scheduled time -----------------------------------


def test_tick_stamps_an_hourly_crontab_with_the_hour_for_jobs_and_plain_tasks(start_beat, broker):
    # given an hourly crontab (UTC) for the test job, a registered plain task and a task known only by name,
    # saved and seen by beat at 12:59:00Z
    with time_machine.travel(at("2026-11-30 12:59:00"), tick=False) as clock:
        for name, task in (("hourly-job", JOB_TASK), ("hourly-registered", REGISTERED_TASK),
                           ("hourly-by-name", UNREGISTERED_TASK)):
            periodic_task(name, task, crontab=crontab("0 * * * *"))
        scheduler = start_beat()
        assert broker.messages("hourly-job") == []

        # when beat wakes at 13:00:07Z
        clock.move_to(at("2026-11-30 13:00:07"))
        tick_until_idle(scheduler)

    # then each sends one message stamped with 13:00:00Z, the fire time, not the moment beat woke
    for name, task in (("hourly-job", JOB_TASK), ("hourly-registered", REGISTERED_TASK),
                       ("hourly-by-name", UNREGISTERED_TASK)):
        message = broker.only_message(name)
        assert (message.task, message.scheduled_for) == (task, "2026-11-30T13:00:00Z")
    # and the job's own kwargs and task id name the same scheduled time (a beat trigger of it)
    job = broker.only_message("hourly-job")
    assert job.kwargs == {"trigger": "beat", "scheduled_for": "2026-11-30T13:00:00Z"}
    assert job.task_id.startswith("test-noop:20261130T130000Z:")
    # and sending created no run: the worker records runs (a refused trigger would leave a SKIPPED one)
    assert JobRun.objects.count() == 0


@pytest.mark.parametrize(("every", "slot"), [
    (1, "2026-09-21T14:13:23Z"),
    (10, "2026-09-21T14:13:20Z"),
    (60, "2026-09-21T14:13:00Z"),
])
def test_tick_stamps_an_interval_with_the_latest_multiple_of_it_since_the_epoch(start_beat, broker, every, slot):
    # given the test job and a plain task every `every` s, last run an hour before
    with time_machine.travel(epoch(1_790_000_003.5), tick=False):
        for name, task in (("every-job", JOB_TASK), ("every-by-name", UNREGISTERED_TASK)):
            periodic_task(name, task, interval=interval(every), last_run_at=epoch(1_790_000_003.5 - 3600))

        # when beat starts at 1_790_000_003.5 (14:13:23.5Z) and ticks
        start_beat()

    # then both messages carry the latest whole multiple of `every` s since the epoch
    assert broker.only_message("every-job").scheduled_for == slot
    assert broker.only_message("every-by-name").scheduled_for == slot
    assert broker.only_message("every-job").kwargs["scheduled_for"] == slot


def test_tick_fires_an_interval_at_its_epoch_slot_not_an_interval_after_the_last_run(start_beat, broker):
    # given a plain task every 10 s last run at 1_790_000_000.2 (14:13:20.2Z), and beat started 3.3 s later
    with time_machine.travel(epoch(1_790_000_003.5), tick=False) as clock:
        periodic_task("every-10s", UNREGISTERED_TASK, interval=interval(10), last_run_at=epoch(1_790_000_000.2))
        scheduler = start_beat()
        assert broker.messages("every-10s") == []

        # when beat ticks at 1_790_000_010.1, 9.9 s after the last run (a stock interval waits 10 s)
        clock.move_to(epoch(1_790_000_010.1))
        tick_until_idle(scheduler)

    # then it is sent for the slot 14:13:30Z
    assert broker.only_message("every-10s").scheduled_for == "2026-09-21T14:13:30Z"


def test_tick_stamps_a_one_off_clocked_task_with_its_clocked_time(start_beat, broker):
    # given one-off clocked tasks for 2026-12-01T08:00:00Z (the test job and a plain task), saved at 07:59:00Z
    with time_machine.travel(at("2026-12-01 07:59:00"), tick=False) as clock:
        when = clocked(at("2026-12-01 08:00:00"))
        periodic_task("once-job", JOB_TASK, clocked=when, one_off=True)
        periodic_task("once-by-name", UNREGISTERED_TASK, clocked=when, one_off=True)
        scheduler = start_beat()
        assert broker.messages("once-by-name") == []

        # when beat wakes 3 s after that time
        clock.move_to(at("2026-12-01 08:00:03"))
        tick_until_idle(scheduler)

    # then each is sent once, stamped with its clocked time
    assert broker.only_message("once-job").scheduled_for == "2026-12-01T08:00:00Z"
    assert broker.only_message("once-by-name").scheduled_for == "2026-12-01T08:00:00Z"


def test_after_downtime_beat_sends_once_for_the_latest_fire_time(start_beat, broker):
    # given an hourly plain task last run at 10:00:05Z, and beat down since
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False):
        periodic_task("hourly", UNREGISTERED_TASK, crontab=crontab("0 * * * *"), last_run_at=at("2026-11-30 10:00:05"))

        # when beat starts again at 13:20:00Z
        start_beat()

    # then it sends one message, for 13:00:00Z (the default catch-up, `latest`), none for 11:00 or 12:00
    assert [m.scheduled_for for m in broker.messages("hourly")] == ["2026-11-30T13:00:00Z"]


SCHEDULES = {
    # kind: (schedule fields, now, expected scheduled_for)
    "crontab 0 * * * *": (lambda: {"crontab": crontab("0 * * * *")}, at("2026-11-30 13:00:07"), "2026-11-30T13:00:00Z"),
    "interval 10 s": (lambda: {"interval": interval(10)}, epoch(1_790_000_003.5), "2026-09-21T14:13:20Z"),
    "clocked": (lambda: {"clocked": clocked(at("2026-12-01 08:00:00")), "one_off": True},
                at("2026-12-01 08:00:03"), "2026-12-01T08:00:00Z"),
}

@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("send", [
    pytest.param(lambda s, e: s.apply_entry(e, producer=s.producer), id="apply_entry"),
    pytest.param(lambda s, e: s.apply_async(e, producer=s.producer, advance=False), id="apply_async-advance=False"),
    pytest.param(lambda s, e: s.apply_async(e, producer=s.producer), id="apply_async-default"),
])
def test_every_public_send_method_stamps_the_scheduled_time(start_beat, broker, kind, send):
    fields, now, slot = SCHEDULES[kind]
    # given the test job and a plain task on that schedule, read by beat
    with time_machine.travel(now, tick=False):
        periodic_task("direct-job", JOB_TASK, **fields())
        periodic_task("direct-by-name", UNREGISTERED_TASK, **fields())
        scheduler = start_beat(lazy=True)

        # when each entry is sent through the method, without tick
        for name in ("direct-job", "direct-by-name"):
            send(scheduler, scheduler.schedule[name])

    # then both messages carry the scheduled time
    assert broker.only_message("direct-job").scheduled_for == slot
    assert broker.only_message("direct-by-name").scheduled_for == slot


# -- what the PeriodicTask says passes through ----------------------------------


def test_args_kwargs_routing_priority_expiry_and_headers_pass_through_with_ours_added(start_beat, broker):
    # given a plain task with everything the admin can set, and a worker's queue "reports" bound to
    # exchange "jobs" with routing key "jobs.reports"
    reports = Queue("reports", Exchange("jobs", type="direct"), routing_key="jobs.reports")
    reports(broker.connection.default_channel).declare()
    their_headers = '{"tenant": "acme", "trace_id": "abc-123"}'
    with time_machine.travel(at("2026-11-30 12:59:00"), tick=False) as clock:
        periodic_task(
            "report", UNREGISTERED_TASK, crontab=crontab("0 * * * *"),
            args='[1, "two"]', kwargs='{"x": 3, "when": null}', queue="reports", exchange="jobs",
            routing_key="jobs.reports", priority=6, expires=at("2026-11-30 14:00:00"), headers=their_headers,
        )
        scheduler = start_beat()

        # when it fires at 13:00:07Z
        clock.move_to(at("2026-11-30 13:00:07"))
        tick_until_idle(scheduler)

    # then the message has their args, kwargs, routing, priority, expiry and headers, plus ours
    message = broker.only_message("report")
    assert (message.task, message.args, message.kwargs) == (UNREGISTERED_TASK, [1, "two"], {"x": 3, "when": None})
    assert (message.queue, message.exchange, message.routing_key) == ("reports", "jobs", "jobs.reports")
    assert message.priority == 6
    assert message.headers["expires"] == "2026-11-30T14:00:00+00:00"
    assert message.headers["tenant"] == "acme" and message.headers["trace_id"] == "abc-123"
    assert message.headers["scheduled_for"] == "2026-11-30T13:00:00Z"
    assert message.headers["periodic_task_name"] == "report"
    # and their row is unchanged: our header lives only in the message
    assert PeriodicTask.objects.get(name="report").headers == their_headers


def test_a_job_keeps_its_routing_priority_expiry_and_headers(start_beat, broker):
    # given the test job on queue "jobs-high" with priority 3, 30 s expiry and a custom header
    with time_machine.travel(at("2026-11-30 12:59:00"), tick=False) as clock:
        periodic_task("routed-job", JOB_TASK, crontab=crontab("0 * * * *"), queue="jobs-high", priority=3,
                      expire_seconds=30, headers='{"tenant": "acme"}')
        scheduler = start_beat()

        # when it fires at 13:00:07Z
        clock.move_to(at("2026-11-30 13:00:07"))
        tick_until_idle(scheduler)

    # then it reaches queue "jobs-high" with priority 3, expiring 30 s after it was sent, with both headers
    message = broker.only_message("routed-job")
    assert (message.queue, message.exchange, message.routing_key) == ("jobs-high", "", "jobs-high")
    assert message.priority == 3
    assert message.headers["expires"] == "2026-11-30T13:00:37+00:00"
    assert (message.headers["tenant"], message.scheduled_for) == ("acme", "2026-11-30T13:00:00Z")


def test_a_scheduled_for_header_set_in_the_admin_is_replaced_by_the_computed_one(start_beat, broker):
    # given a task whose own headers already claim a scheduled time
    with time_machine.travel(at("2026-11-30 12:59:00"), tick=False) as clock:
        periodic_task("claims-a-time", UNREGISTERED_TASK, crontab=crontab("0 * * * *"),
                      headers='{"scheduled_for": "1999-01-01T00:00:00Z", "tenant": "acme"}')
        scheduler = start_beat()

        # when it fires at 13:00:07Z
        clock.move_to(at("2026-11-30 13:00:07"))
        tick_until_idle(scheduler)

    # then the message carries the time computed from the schedule, and their other header
    message = broker.only_message("claims-a-time")
    assert (message.scheduled_for, message.headers["tenant"]) == ("2026-11-30T13:00:00Z", "acme")


# -- one-off and expired tasks ---------------------------------------------------


def test_a_one_off_interval_task_is_sent_once_then_disabled(start_beat, broker):
    # given a one-off plain task every 10 s, last run an hour before
    with time_machine.travel(epoch(1_790_000_003.5), tick=False) as clock:
        periodic_task("once-every-10s", UNREGISTERED_TASK, interval=interval(10), one_off=True,
                      last_run_at=epoch(1_790_000_003.5 - 3600))

        # when beat starts and ticks now, and again in the next slot, 10 s later
        scheduler = start_beat()
        clock.move_to(epoch(1_790_000_013.5))
        tick_until_idle(scheduler)

    # then it was sent once, for 14:13:20Z, and is disabled in the database
    assert [m.scheduled_for for m in broker.messages("once-every-10s")] == ["2026-09-21T14:13:20Z"]
    assert PeriodicTask.objects.get(name="once-every-10s").enabled is False


def test_a_one_off_clocked_task_is_not_sent_again_and_is_disabled_when_beat_rereads(start_beat, broker):
    # given a one-off clocked plain task for 08:00:00Z that beat has sent at 08:00:03Z
    with time_machine.travel(at("2026-12-01 07:59:00"), tick=False) as clock:
        periodic_task("once-at-8", UNREGISTERED_TASK, clocked=clocked(at("2026-12-01 08:00:00")), one_off=True)
        scheduler = start_beat()
        clock.move_to(at("2026-12-01 08:00:03"))
        tick_until_idle(scheduler)
        assert len(broker.messages("once-at-8")) == 1

        # when beat ticks a second later
        clock.move_to(at("2026-12-01 08:00:04"))
        tick_until_idle(scheduler)
        # then it is not sent again
        assert len(broker.messages("once-at-8")) == 1

        # when beat ticks after its 5-minute full re-read of the schedule
        clock.move_to(at("2026-12-01 08:05:10"))
        tick_until_idle(scheduler)
        # then the row is disabled
        assert PeriodicTask.objects.get(name="once-at-8").enabled is False

        # when a second beat starts (a restart) and ticks
        start_beat()

    # then it was still sent only the once
    assert len(broker.messages("once-at-8")) == 1


def test_an_expired_task_is_not_sent_and_is_disabled(start_beat, broker):
    # given two hourly plain tasks, one of which expired at 12:30Z
    with time_machine.travel(at("2026-11-30 12:00:30"), tick=False) as clock:
        periodic_task("expired", UNREGISTERED_TASK, crontab=crontab("0 * * * *"), expires=at("2026-11-30 12:30:00"))
        periodic_task("current", UNREGISTERED_TASK, crontab=crontab("0 * * * *"))
        scheduler = start_beat()

        # when beat ticks at 13:00:07Z
        clock.move_to(at("2026-11-30 13:00:07"))
        tick_until_idle(scheduler)

    # then only the current one is sent, and the expired one is disabled
    assert broker.messages("expired") == []
    assert broker.only_message("current").scheduled_for == "2026-11-30T13:00:00Z"
    assert PeriodicTask.objects.get(name="expired").enabled is False


# -- JobEntry ------------------------------------------------------------------------


def test_job_entry_aligns_an_interval_to_the_epoch(app):
    # given a 10 s interval row last run at 1_790_000_000.2 (14:13:20.2Z)
    row = periodic_task("every-10s", UNREGISTERED_TASK, interval=interval(10), last_run_at=epoch(1_790_000_000.2))

    # when asked at 1_790_000_003.5
    with time_machine.travel(epoch(1_790_000_003.5), tick=False):
        entry = JobEntry(row, app=app)
        stock = ModelEntry(row, app=app)
        # then the slot 14:13:20Z has run: not due, next slot 14:13:30Z in 6.5 s
        assert entry.is_due() == (False, pytest.approx(6.5, abs=1e-6))
        # (a stock interval counts 10 s from the last run: 6.7 s)
        assert stock.is_due() == (False, pytest.approx(6.7, abs=1e-6))

    # when asked at 1_790_000_010.1, in the next slot
    with time_machine.travel(epoch(1_790_000_010.1), tick=False):
        entry = JobEntry(row, app=app)
        stock = ModelEntry(row, app=app)
        # then it is due, and the slot after next starts in 9.9 s
        assert entry.is_due() == (True, pytest.approx(9.9, abs=1e-6))
        # (a stock interval would wait 0.1 s more)
        assert stock.is_due() == (False, pytest.approx(0.1, abs=1e-6))
        # and once reserved (beat's next(entry)), the same slot is not due again
        following = next(entry)
        assert isinstance(following, JobEntry)
        assert following.is_due() == (False, pytest.approx(9.9, abs=1e-6))


def test_job_entry_keeps_crontab_and_clocked_schedules(app):
    # given an hourly crontab row last run at 12:59:00Z and a clocked row for 08:00:00Z
    with time_machine.travel(at("2026-11-30 12:59:00"), tick=False) as clock:
        hourly = periodic_task("hourly", UNREGISTERED_TASK, crontab=crontab("0 * * * *"))
        once = periodic_task("once", UNREGISTERED_TASK, clocked=clocked(at("2026-12-01 08:00:00")), one_off=True)

        # when read at 12:59:30Z and at 13:00:07Z
        clock.move_to(at("2026-11-30 12:59:30"))
        entry = JobEntry(hourly, app=app)
        # then the crontab is Celery's own: not due, 30 s to 13:00
        assert entry.schedule == hourly.schedule
        assert entry.is_due() == (False, 30.0)
        clock.move_to(at("2026-11-30 13:00:07"))
        # and due at 13:00:07Z, next check at 14:00:00Z, 3593 s later
        assert JobEntry(hourly, app=app).is_due() == (True, 3593.0)
        # and the clocked schedule is unchanged: 18 h 59 min 53 s to go
        assert JobEntry(once, app=app).schedule == once.schedule
        assert JobEntry(once, app=app).is_due() == (False, 68393.0)


# -- time zones ----------------------------------------------------------------------


@pytest.mark.parametrize(("before", "fires_at", "slot"), [
    ("2026-11-30 07:59:00", "2026-11-30 08:00:05", "2026-11-30T08:00:00Z"),  # 09:00 CET = 08:00Z
    ("2026-07-01 06:59:00", "2026-07-01 07:00:05", "2026-07-01T07:00:00Z"),  # 09:00 CEST = 07:00Z
])
def test_a_berlin_crontab_fires_and_is_stamped_at_nine_berlin_time(start_beat, broker, before, fires_at, slot):
    # given the test job at 09:00 every day in Europe/Berlin (the app's TIME_ZONE is UTC)
    with time_machine.travel(at(before), tick=False) as clock:
        periodic_task("nine-in-berlin", JOB_TASK, crontab=crontab("0 9 * * *", tz="Europe/Berlin"))
        scheduler = start_beat()
        assert broker.messages("nine-in-berlin") == []

        # when beat wakes 5 s after 09:00 Berlin time
        clock.move_to(at(fires_at))
        tick_until_idle(scheduler)

    # then it is sent, stamped with 09:00 Berlin time in UTC
    assert broker.only_message("nine-in-berlin").scheduled_for == slot


# -- start_time (SPEC §10) -----------------------------------------------------------


def test_a_task_with_a_start_time_never_runs_for_a_scheduled_time_before_it(start_beat, broker):
    # given an hourly plain task that starts at 13:30Z, saved at 13:20Z
    with time_machine.travel(at("2026-11-30 13:20:00"), tick=False) as clock:
        periodic_task("starts-at-1330", UNREGISTERED_TASK, crontab=crontab("0 * * * *"),
                      start_time=at("2026-11-30 13:30:00"))
        scheduler = start_beat()

        # when beat ticks at 13:30:01Z, then at 14:00:05Z
        clock.move_to(at("2026-11-30 13:30:01"))
        tick_until_idle(scheduler)
        clock.move_to(at("2026-11-30 14:00:05"))
        tick_until_idle(scheduler)

    # then the first message is for 14:00:00Z, the first fire time at or after the start time
    assert [m.scheduled_for for m in broker.messages("starts-at-1330")] == ["2026-11-30T14:00:00Z"]
