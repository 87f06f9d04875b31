"""What keeps a running attempt honest while its job function works: heartbeat and lock (issue 11).

The database is the fence, the Redis lock the fast path. While an attempt
runs, :class:`RunKeeper` wakes every ``RUN_HEARTBEAT_SECONDS`` (or a third of
the lock's TTL, if shorter) and

1. renews the job's lock under the run's token. If the key has vanished
   (Redis restarted without persistence, or a failover lost the last writes),
   the run takes it back with its own token. If another token holds it and
   that token's run is working (RUNNING with a fresh heartbeat), the run
   stops before its next batch; a holder that is not working (a trigger the
   database will refuse) is waited out, and the key taken back once free;
2. writes the run's heartbeat (``JobRun.heartbeat_at``, one conditional
   UPDATE). Other processes judge a run lost from that heartbeat alone
   (3 periods without one), never from the Redis key. If the UPDATE finds
   the run no longer RUNNING, another process judged it lost: the run must
   stop (:attr:`RunKeeper.stop_reason`). A database that does not answer is
   tried again next period.

The job function sees a stop through ``JobContext.should_stop()``; the engine
then records the run FAILED with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection

from scheduler_app.context import heartbeat_seconds
from scheduler_app.locks import OwnedRedisBackend

logger = logging.getLogger("scheduler")

T = TypeVar("T")

#: Longest a run's bookkeeping waits for an unreachable database before giving up, in seconds.
DATABASE_WAIT_SECONDS = 600.0


class RunKeeper:
    """Heartbeat and lock keeper of one running attempt (module docstring). Use as a context manager.

    Args:
        backend: the job lock backend.
        key: the job's lock key.
        token: the run's task id (the lock's value).
        ttl_seconds: the lock's TTL in seconds.
        run_id: the ``JobRun`` primary key.
        job: the job name (for log lines).
        interval: seconds between two rounds; default ``min(RUN_HEARTBEAT_SECONDS, ttl/3)``.
    """

    def __init__(self, backend: OwnedRedisBackend, key: str, token: str, ttl_seconds: float, *, run_id: int,
                 job: str, interval: float | None = None):
        self.backend, self.key, self.token, self.ttl = backend, key, token, ttl_seconds
        self.run_id, self.job = run_id, job
        self.interval = interval if interval is not None else heartbeat_seconds(ttl_seconds)
        self._reason: str | None = None
        self._waiting_for: str | None = None  # the foreign holder last reported, so it is logged once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"run-keeper:{key}", daemon=True)

    def stop_reason(self) -> str | None:
        """Why the run must stop now, or None while it may go on (read by ``JobContext.should_stop``)."""
        return self._reason

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.beat()
                if self._reason is not None:
                    return
        finally:
            connection.close()  # this thread's own database connection

    def beat(self) -> None:
        """One round: lock, then heartbeat. Never raises.

        The lock first: on SQLite a heartbeat may wait for the job's own write
        transaction (one writer at a time), and the lock's TTL must not run
        out meanwhile.
        """
        self._keep_lock()
        if self._reason is None:
            self._heartbeat()

    def _heartbeat(self) -> None:
        from scheduler_app.models import JobRun

        try:
            alive = JobRun.objects.heartbeat(self.run_id)
        except DatabaseError as exc:
            connection.close()  # a fresh connection next round (the server may have restarted)
            logger.warning("Job %s: could not write run %s's heartbeat: %s: %s", self.job, self.run_id,
                           type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            return
        if not alive:
            self._reason = (f"run {self.run_id} was judged lost (no heartbeat for 3 periods) and ended by another "
                            "process; it stopped so as not to work beside a newer run")
            logger.error("Job %s: %s", self.job, self._reason)

    def _keep_lock(self) -> None:
        try:
            if self.backend.renew(self.key, self.token, self.ttl):
                return
            if self.backend.take_back(self.key, self.token, self.ttl):
                self._waiting_for = None
                logger.warning("Job %s: its lock had vanished from Redis (restarted or failed over?); run %s took "
                               "it back", self.job, self.run_id)
                return
            holder = self.backend.holder(self.key)
        except redis.RedisError:
            return  # Redis unreachable: try again next round; the database still fences the run
        if holder is None or holder.token == self.token:
            return
        if self._holder_is_working(holder.token):
            self._reason = (f"its lock was taken by {holder.token}, a working run, while Redis had lost it; "
                            f"run {self.run_id} stopped before its next batch")
            logger.error("Job %s: %s", self.job, self._reason)
        elif self._waiting_for != holder.token:
            self._waiting_for = holder.token
            logger.warning("Job %s: its lock is held by %s, which the database does not let work; run %s goes on "
                           "and takes the lock back when it is free", self.job, holder.token, self.run_id)

    def _holder_is_working(self, token: str) -> bool:
        from scheduler_app.models import JobRun

        try:
            run = JobRun.objects.live_run(self.job, exclude_task_id=self.token)
        except DatabaseError:
            connection.close()
            return False
        return run is not None and run.task_id == token

    def __enter__(self) -> RunKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def until_database_answers(fn: Callable[[], T], *, what: str, job: str,
                           max_wait_s: float = DATABASE_WAIT_SECONDS) -> T:
    """Call ``fn`` (a run's bookkeeping), waiting through a database outage; return its result.

    An ``OperationalError`` or ``InterfaceError`` (server stopped, connection
    cut, SQLite locked) closes the connection and tries again every second,
    logging once, for up to ``max_wait_s`` seconds. So an outage costs no
    attempt and the run's outcome is written once the database is back
    (issue 11, item 2).

    Raises:
        OperationalError, InterfaceError: the database did not answer within ``max_wait_s`` seconds.
        Any other exception of ``fn`` as it is.
    """
    started = time.monotonic()
    deadline = started + max_wait_s
    warned = False
    while True:
        try:
            result = fn()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            if not warned:
                warned = True
                logger.warning("Job %s: the database does not answer while %s (%s: %s); trying again every second "
                               "for up to %ds", job, what, type(exc).__name__,
                               (str(exc).strip().splitlines() or [""])[0], max_wait_s)
            try:
                connection.close()
            except DatabaseError:
                pass
            time.sleep(1.0)
            close_old_connections()
            continue
        if warned:
            logger.warning("Job %s: the database answers again after %.0fs; %s done", job,
                           time.monotonic() - started, what)
        return result
