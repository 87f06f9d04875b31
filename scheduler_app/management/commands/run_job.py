"""``manage.py run_job NAME [--dry-run] [--local] [--scheduled-for ISO-TIME]``: run a job now (SPEC §1, §10).

Exit codes: 0 succeeded, 1 failed after all attempts (or no outcome), 2 usage
error (unknown job: the valid names are listed; a ``--scheduled-for`` that is
not a fire time of the job's schedule), 3 skipped because another run holds
the lock (the holder and the expiry are printed) or the scheduled time
already has a run (its id is printed).
"""

from __future__ import annotations

import datetime as dt
import math
import signal
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from scheduler_app.context import MAX_ATTEMPTS, iso
from scheduler_app.locks import LockHeld
from scheduler_app.models import JobRun
from scheduler_app.registry import get_spec, load_registry

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class Command(BaseCommand):
    help = (
        "Run a job now, through the same path as a scheduled run: lock, retries, history, logs. "
        "By default the job is sent to the Celery workers and this command waits for its outcome; "
        "--local runs it in this process. Exit codes: 0 succeeded, 1 failed, 2 usage error, "
        "3 skipped because another run holds the lock."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="Job name, e.g. archive-audit-logs.")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change and change nothing.")
        parser.add_argument("--local", action="store_true", help="Run in this process (no worker needed).")
        parser.add_argument("--timeout", type=float, default=3600.0,
                            help="Seconds to wait for the worker's outcome (default 3600).")
        parser.add_argument("--list", action="store_true", help="List the jobs and exit.")
        parser.add_argument("--scheduled-for", metavar="ISO-TIME",
                            help="Run this scheduled time of the job (a past fire time of its schedule, e.g. "
                                 "2026-11-30T09:00:00Z; without an offset: TIME_ZONE), once: exit 3 if it has a run.")

    def handle(self, *args, name=None, dry_run=False, local=False, timeout=3600.0, list=False, scheduled_for=None,
               **options):
        registry = load_registry()
        if list:
            for spec in sorted(registry.values(), key=lambda s: s.name):
                self.stdout.write(f"{spec.name}\t{spec.crontab}\tlock ttl {spec.lock_ttl}s\t{spec.task_name}")
            return
        if not name:
            raise CommandError(f"give a job name; valid jobs: {', '.join(sorted(registry))}", returncode=EXIT_USAGE)
        try:
            spec = get_spec(name)
        except KeyError as exc:
            raise CommandError(exc.args[0], returncode=EXIT_USAGE) from None
        if not math.isfinite(timeout) or timeout <= 0:
            raise CommandError(f"--timeout={timeout} is invalid: a positive number of seconds", returncode=EXIT_USAGE)
        slot = _scheduled_time(name, scheduled_for) if scheduled_for is not None else None

        from django.db import DatabaseError
        from kombu.exceptions import OperationalError as BrokerError
        from redis.exceptions import RedisError

        # SIGTERM (e.g. `timeout`, systemd) ends a local run like Ctrl-C: recorded as failed, lock released.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            if slot is not None:
                existing = JobRun.objects.filter(job=name, scheduled_for=slot, dry_run=False).exclude(
                    status=JobRun.Status.SKIPPED).first()
                if existing is not None:
                    self.stderr.write(f"Job {name}: scheduled time {iso(slot)} already has run {existing.pk} "
                                      f"({existing.status}); nothing sent")
                    sys.exit(EXIT_SKIPPED)
            sys.exit(self._run(name, spec, dry_run=dry_run, local=local, timeout=timeout, scheduled_for=slot))
        except DatabaseError as exc:
            self.stderr.write(_describe_database_problem(exc))
            sys.exit(EXIT_FAILED)
        except (BrokerError, RedisError) as exc:
            from django.conf import settings

            from scheduler_app.redis_errors import describe_redis_problem

            # Out of memory and a refused password are told apart from "not reachable".
            self.stderr.write(describe_redis_problem(exc, _safe_url(), settings.REDIS_URL))
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            self.stderr.write(f"Interrupted: stopped waiting for job {name}" + ("" if local else
                              "; a run already sent goes on in the worker (see the admin's Job runs)"))
            sys.exit(EXIT_FAILED)

    def _run(self, name, spec, *, dry_run: bool, local: bool, timeout: float, scheduled_for=None) -> int:
        from celery import current_app, states

        task = current_app.tasks[spec.task_name]
        kwargs = {"trigger": JobRun.Trigger.MANUAL, "dry_run": dry_run}
        if scheduled_for is not None:
            kwargs["scheduled_for"] = iso(scheduled_for)
        from scheduler_app.senders import sending_as

        if local:
            with sending_as("run_job --local"):
                result = task.run_locally(kwargs)
        else:
            # limit=1: returns on the first reply instead of waiting out the whole timeout.
            workers = current_app.control.ping(timeout=1.0, limit=1)
            if not workers:
                self.stderr.write(
                    "No Celery worker answered; start one with `celery -A config worker` "
                    f"or run in this process with `manage.py run_job {name} --local`."
                )
                return EXIT_FAILED
            with sending_as("run_job"):
                result = task.apply_async(kwargs=kwargs)
        if result.state == states.REJECTED:
            held = result.info
            if isinstance(held, LockHeld):
                self.stderr.write(f"Job {name} skipped: lock held by {JobRun.objects.describe_holder(held.holder)}")
            else:
                run = JobRun.objects.filter(job=name, scheduled_for=scheduled_for, dry_run=False).exclude(
                    status=JobRun.Status.SKIPPED).first() if scheduled_for else None
                self.stderr.write(f"Job {name} skipped: scheduled time {iso(scheduled_for)} already has "
                                  + (f"run {run.pk}" if run else "a run"))
            return EXIT_SKIPPED
        if not local:
            self.stdout.write(
                f"Sent job {name} as task {result.id}; waiting for the worker (Ctrl-C stops waiting, not the job)"
            )
            return self._wait(name, result, timeout, lock_ttl=spec.lock_ttl)
        return self._report(name, result.id, timeout)

    def _wait(self, name: str, result, timeout: float, *, lock_ttl: float) -> int:
        """Wait for the run of ``result`` (an AsyncResult) to end; return the exit code.

        The database is watched first (the run's row, every 0.2 s), the result
        backend second, so that:

        * a broker or Redis outage is waited through (the row still tells the outcome);
        * a run whose heartbeat stopped (its whole worker died) is reported within
          :func:`presumed_dead_after_seconds` (1.25 heartbeat periods + 1 s), plus the 1 s in which the
          workers are asked whether one still holds its task, and exits 1; a run whose worker still
          holds its task (its heartbeats fail because the database does not answer it) is waited for;
        * a worker that reports the run's process lost (``WorkerLostError``) exits 1 at once;
        * a database outage is waited through too (the worker writes the outcome once it is back).
        """
        from django.db import DatabaseError, connection

        from scheduler_app.context import heartbeat_seconds, presumed_dead_after_seconds


        deadline = time.monotonic() + timeout
        ask_again_at = 0.0  # when a silent run's workers may be asked again whether they hold its task
        problems: set[str] = set()

        def once(kind: str, message: str) -> None:
            if kind not in problems:
                problems.add(kind)
                self.stderr.write(message)

        while time.monotonic() < deadline:
            run = None
            try:
                run = JobRun.objects.filter(task_id=result.id).first()
                if "database" in problems:
                    problems.discard("database")
                    self.stderr.write("The database answers again; still waiting")
            except DatabaseError as exc:
                connection.close()
                once("database", f"The database does not answer ({_first_line(exc)}); still waiting: the worker "
                                 "records the outcome once it is back")
            if run is not None and run.status != JobRun.Status.RUNNING:
                return self._report(name, result.id, timeout)
            if run is not None and run.deferred_until is not None:
                return self._report(name, result.id, max(deadline - time.monotonic(), 1))
            if run is not None:
                # By the database's clock, as the heartbeats are written: this host's clock may be off.
                silent = JobRun.objects.silent_seconds(run.pk) or 0.0
                if silent > presumed_dead_after_seconds(lock_ttl) and time.monotonic() >= ask_again_at:
                    # A silent heartbeat is a dead worker or a database the worker cannot write to
                    # (its bookkeeping waits the outage through): the workers tell them apart.
                    try:
                        holder = _worker_holding(result.id)
                    except Exception:  # the broker does not answer: nobody can tell, so wait
                        holder = "a worker that cannot be asked now (Redis does not answer)"
                    if holder is None:
                        self.stderr.write(
                            f"Job {name}: run {run.pk} on {run.worker or 'its worker'} has sent no heartbeat for "
                            f"{silent:.0f}s (one every {heartbeat_seconds(lock_ttl):g}s) and no worker holds its "
                            "task: its worker died. The run will be recorded as lost by the next run of the job (or "
                            "`check_schedules`); its lock is taken over then.")
                        return EXIT_FAILED
                    ask_again_at = time.monotonic() + presumed_dead_after_seconds(lock_ttl)
                    once("silent", f"Job {name}: run {run.pk} has sent no heartbeat for {silent:.0f}s, but its "
                                   f"task is still held by {holder} (the database may not answer it); still waiting")
            try:
                state, info = result.state, result.info
                if "broker" in problems:
                    problems.discard("broker")
                    self.stderr.write("Redis answers again; still waiting")
            except Exception as exc:  # the result backend is Redis: any connection error means "not now"
                once("broker", f"Redis does not answer ({type(exc).__name__}); still waiting for the run's "
                               "outcome (reconnecting; the outcome is read from the database)")
                state, info = None, None
            if state == "FAILURE" and (run is None or run.status == JobRun.Status.RUNNING):
                self.stderr.write(f"Job {name}: the worker lost the process running task {result.id}: "
                                  f"{type(info).__name__}: {info}")
                return EXIT_FAILED
            time.sleep(0.2)
        self.stderr.write(f"No outcome for task {result.id} within {timeout:g}s; the run may still be going "
                          "(see the admin's Job runs)")
        return EXIT_FAILED

    def _report(self, name: str, task_id: str, timeout: float = 3600) -> int:
        run = None
        for _ in range(50):  # the worker finishes the row before it stores the result; a --local run, likewise
            run = JobRun.objects.filter(task_id=task_id).first()
            if run is not None and run.status != JobRun.Status.RUNNING:
                break
            time.sleep(0.1)
        if run is None:
            self.stderr.write(f"Job {name}: no run was recorded for task {task_id}")
            return EXIT_FAILED
        if run.status == JobRun.Status.RUNNING and run.deferred_until is not None:
            # A deferred run (JobContext.defer): its batches end it; wait for them too.
            self.stdout.write(f"Job {name} dispatched {run.parts_total} batches (run {run.pk}); waiting for them")
            deadline = time.monotonic() + timeout
            while run.status == JobRun.Status.RUNNING and time.monotonic() < deadline:
                time.sleep(0.5)
                run.refresh_from_db()
        if run.status == JobRun.Status.SUCCEEDED:
            self.stdout.write(
                f"Job {name} succeeded in {run.duration_ms}ms: {run.items_processed or 0} items "
                f"(run {run.pk}, attempt {run.attempts}/{MAX_ATTEMPTS}{', dry run' if run.dry_run else ''})"
            )
            return EXIT_SUCCEEDED
        if run.status == JobRun.Status.SKIPPED:
            self.stderr.write(f"Job {name} skipped ({run.get_skip_reason_display()}), run {run.pk}")
            return EXIT_SKIPPED
        last_line = (run.error.strip().splitlines() or ["unknown error"])[-1]
        self.stderr.write(f"Job {name} failed after {run.attempts} attempts (run {run.pk}): {last_line}")
        return EXIT_FAILED


def _scheduled_time(name: str, text: str) -> dt.datetime:
    """The aware scheduled time ``text`` names, checked to be a past fire time of job ``name``'s schedule.

    The schedule is the job's ``PeriodicTask`` (as beat reads it), or the
    registry's default crontab when it has none.

    Raises:
        CommandError: (exit 2) not ISO 8601, in the future, or not a fire time.
    """
    from django.utils import timezone as dj_timezone
    from django_celery_beat.models import PeriodicTask

    from scheduler_app.registry import get_spec
    from scheduler_app.schedule_services import task_schedule
    from scheduler_app.schedules import next_fire_times, parse_crontab, slot_for

    invalid = CommandError(f"--scheduled-for={text!r} is invalid: an ISO 8601 time such as 2026-11-30T09:00:00Z, "
                           "from the year 2000 to now", returncode=EXIT_USAGE)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if dj_timezone.is_naive(moment):
            moment = dj_timezone.make_aware(moment)
        moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise invalid from None
    if moment.year < 2000:
        raise invalid
    if moment > dj_timezone.now():
        raise CommandError(f"--scheduled-for={iso(moment)} has not come yet; beat will run it", returncode=EXIT_USAGE)
    task = PeriodicTask.objects.select_related("crontab", "interval", "clocked").filter(name=name).first()
    if task is not None and task.start_time is not None and moment < task.start_time:
        raise CommandError(f"--scheduled-for={iso(moment)} is before the job's start_time {iso(task.start_time)}: "
                           "it never runs a time before it (SPEC §10)", returncode=EXIT_USAGE)
    try:
        schedule = task_schedule(task) if task is not None else parse_crontab(get_spec(name).crontab,
                                                                               tz=dj_timezone.get_default_timezone())
        if task is None:
            schedule.tz = dj_timezone.get_default_timezone()
        fires = slot_for(schedule, moment) == moment
    except (TypeError, ValueError) as exc:
        raise CommandError(
            f"job {name}: its schedule has no scheduled times to run ({exc})", returncode=EXIT_USAGE
        ) from None
    if not fires:
        before = slot_for(schedule, moment)
        after = next_fire_times(schedule, moment, 1)
        raise CommandError(
            f"--scheduled-for={iso(moment)} is not a scheduled time of {name} ({schedule!r}); the nearest are "
            f"{iso(before)} and {iso(after[0]) if after else 'none'}", returncode=EXIT_USAGE)
    return moment


def _worker_holding(task_id: str, timeout: float = 1.0) -> str | None:
    """The worker that reports holding ``task_id`` (running it, or waiting to run or retry it), or None.

    One ``query_task`` broadcast, answered by each worker's main process even
    while its pool process is busy; a worker that was killed does not answer.
    Raises the broker's error when the workers cannot be asked.
    """
    from celery import current_app

    replies = current_app.control.inspect(timeout=timeout).query_task(task_id) or {}
    for worker, tasks in replies.items():
        if task_id in (tasks or {}):
            return worker
    return None


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_database_problem(exc: BaseException) -> str:
    """One line naming the real cause: missing tables (run migrate) or a database that does not answer."""
    from django.db import ProgrammingError

    text = str(exc).lower()
    missing_table = "no such table" in text or ("relation" in text and "does not exist" in text)
    if isinstance(exc, ProgrammingError) or missing_table:
        return f"The database has no tables for this project ({_first_line(exc)}); run `manage.py migrate`"
    return (f"The database does not answer ({_first_line(exc)}); start it or check DATABASE_URL. A run already sent "
            "goes on in the worker, which records its outcome once the database is back")


def _safe_url() -> str:
    from django.conf import settings
    from kombu.utils.url import maybe_sanitize_url

    from scheduler_app.redis_urls import is_sentinel_url

    if is_sentinel_url(settings.REDIS_URL):
        # kombu would mask only the first sentinel's password.
        return ";".join(maybe_sanitize_url(part) for part in settings.REDIS_URL.split(";"))
    return maybe_sanitize_url(settings.REDIS_URL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
