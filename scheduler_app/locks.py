"""Owned locks on Redis: the celery-once backend of the job locks (SPEC §6).

Every lock here is a redis-py :class:`redis.lock.Lock`: one ``SET key token
NX PX ttl`` to take it, and redis-py's own compare-and-act scripts to release
it (``release``), renew it (``reacquire``) or check it (``owned``), each of
which acts only while the key still holds the acquisition's token.

celery-once stays the task-level interface. Its stock Redis backend wraps a
``Lock`` too, but forgets the token and clears a lock with a plain ``DEL``,
so anyone may release anyone's lock. :class:`OwnedRedisBackend` keeps
celery-once's interface (``raise_or_lock``, ``clear_lock`` and the
``blocking`` / ``blocking_timeout`` settings) and adds ownership:

* the value of a lock is its holder's token (for jobs, the Celery task id,
  which other code reads to find the run);
* ``clear_lock(key, token=...)`` deletes only when the value is that token;
  without a token it is the operator's forced clear;
* ``renew`` resets the TTL only for the holder, so a job that runs longer
  than its TTL keeps its lock while its worker lives (the running attempt's
  :class:`~scheduler_app.keeper.RunKeeper` renews it), and the lock expires
  within one TTL after the holder dies.

Ownership belongs to the acquisition (its token), never to a thread: the
``Lock`` objects are built with ``thread_local=False``. The seed's ad-hoc
lock API for other code (``acquire_lock``, ``release_lock``, ``with_lock``,
``lock``) is :mod:`scheduler_app.lock_api`, on this backend.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from celery_once.tasks import AlreadyQueued
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from scheduler_app.redis_urls import client_from_url, is_sentinel_url

CLAIM_REFUSED, CLAIM_HELD_ALREADY, CLAIM_TAKEN = 0, 1, 2

#: Seconds between two tries while waiting for a held lock.
POLL_SECONDS = 0.02

#: Client options used unless REDIS_URL's query string sets them
#: (``?socket_timeout=5`` wins over the 10 here).
CLIENT_DEFAULTS = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def get_client(url: str) -> redis.Redis:
    """Return this process's Redis client for ``url`` (one connection pool per URL).

    ``url`` is ``redis://[:password@]host:port/db[?options]``, ``rediss://``
    (TLS) or ``unix://`` (celery-once's ``redis+socket://`` is accepted too),
    or Redis Sentinel's ``sentinel://host:port;sentinel://host2:port/db?master_name=NAME``
    (see :mod:`scheduler_app.redis_urls`): then the client talks to the
    current master, and after a failover its next connection asks the
    sentinels again and goes to the new master.
    Options in the query string (``socket_timeout``, ``health_check_interval``,
    ``ssl_cert_reqs`` ...) are redis-py's and win over :data:`CLIENT_DEFAULTS`.
    Nothing is connected yet.

    Raises:
        ValueError: the scheme is unknown, an option's value is malformed,
            an option is not a redis-py connection option, or a Sentinel URL
            names no master.
    """
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = _build_client(url)
                _clients[url] = client
    return client


def _build_client(url: str) -> redis.Redis:
    redis_py_url = "unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url
    # The URL's options are applied after the keyword arguments, so they win.
    client = client_from_url(redis_py_url, **CLIENT_DEFAULTS)
    pool = client.connection_pool
    try:
        # Builds (never connects) one connection, so a misspelt option fails
        # here with its name instead of in the first command a job sends.
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise ValueError(f"Redis URL {_without_password(url)!r} has an option redis-py does not know: {exc}") from None
    return client


def _without_password(url: str) -> str:
    if is_sentinel_url(url):  # one part per sentinel, each with its own userinfo
        return ";".join(_part_without_password(part) for part in url.split(";"))
    return _part_without_password(url)


def _part_without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    return f"{scheme}{sep}{'***' + at if at else ''}{hostpart}" if userinfo else url


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``token`` (a task id for job locks) and ``ttl_ms`` left (milliseconds)."""

    token: str
    ttl_ms: int


class LockHeld(AlreadyQueued):
    """celery-once's ``AlreadyQueued`` with the holder attached.

    ``countdown`` is the seconds the lock has left; ``holder`` the
    :class:`LockHolder` seen (None if unknown).
    """

    def __init__(self, countdown: float, holder: LockHolder | None):
        super().__init__(countdown)
        self.holder = holder


def _check_ttl(what: str, seconds: float) -> None:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0.001:
        raise ValueError(f"{what}={seconds!r} is invalid: a number of seconds >= 0.001")


class OwnedRedisBackend:
    """celery-once backend whose locks only their holder can release (SPEC §6).

    Configured by ``CELERY_ONCE = {"backend": "scheduler_app.locks.OwnedRedisBackend",
    "settings": {...}}`` with celery-once's Redis settings:

    * ``url``: the Redis URL (see :func:`get_client`);
    * ``default_timeout``: lock TTL in seconds when a task names none (read by celery-once);
    * ``blocking`` (bool, default False): whether :meth:`raise_or_lock` waits
      for a held lock at all;
    * ``blocking_timeout`` (seconds, default 1; None = no limit): how long it
      waits when ``blocking`` is True.

    Raises:
        ValueError: ``blocking`` is not a bool, ``blocking_timeout`` is not
            None or a finite number >= 0, or the URL is bad (see :func:`get_client`).
    """

    def __init__(self, settings: Mapping):
        self.url = settings["url"]
        self.redis = get_client(self.url)
        self.blocking = settings.get("blocking", False)
        if not isinstance(self.blocking, bool):
            raise ValueError(f"CELERY_ONCE blocking={self.blocking!r} is invalid: True or False")
        self.blocking_timeout = settings.get("blocking_timeout", 1)
        if self.blocking_timeout is not None and (
            isinstance(self.blocking_timeout, bool) or not isinstance(self.blocking_timeout, (int, float))
            or not math.isfinite(self.blocking_timeout) or self.blocking_timeout < 0
        ):
            raise ValueError(f"CELERY_ONCE blocking_timeout={self.blocking_timeout!r} is invalid: "
                             "None (no limit) or a number of seconds >= 0")
        #: What ``raise_or_lock`` waits when its caller does not say (celery-once's meaning).
        self.default_wait: float = 0.0
        if self.blocking:
            self.default_wait = math.inf if self.blocking_timeout is None else float(self.blocking_timeout)
        self._encoder = self.redis.get_encoder()
        #: (key, timeout) -> a Lock used only through do_acquire / do_release,
        #: which read nothing but its name, TTL and client, so one object serves
        #: every thread (saves building two per job-lock acquire + release).
        self._stateless: dict[tuple[str, float | None], Lock] = {}

    def owned_lock(self, key: str, timeout: float | None = None, token: str | None = None) -> Lock:
        """A redis-py ``Lock`` on ``key`` with a TTL of ``timeout`` seconds, not yet acquired.

        ``timeout`` None means no TTL: only for releasing or checking, as an
        acquired lock without a TTL would outlive a crashed holder.

        With ``token``, the Lock stands for that token's acquisition: its
        ``release``, ``reacquire``, ``extend`` and ``owned`` act only while
        ``key`` holds ``token`` (raising ``redis.exceptions.LockNotOwnedError``
        otherwise), from whatever thread calls them.
        """
        lock = Lock(self.redis, key, timeout=timeout, blocking=False, thread_local=False)
        if token is not None:
            lock.local.token = self._encoder.encode(token)
        return lock

    def _stateless_lock(self, key: str, timeout: float | None) -> Lock:
        lock = self._stateless.get((key, timeout))
        if lock is None:
            if len(self._stateless) >= 1024:
                self._stateless.clear()
            lock = self._stateless[(key, timeout)] = self.owned_lock(key, timeout)
        return lock

    def raise_or_lock(self, key: str, timeout: float, token: str | None = None, *,
                      wait: float | None = None, keep_waiting: Callable[[LockHolder], bool] | None = None) -> str:
        """Take the lock ``key`` for ``timeout`` seconds or raise :class:`LockHeld` (celery-once's interface).

        Args:
            key: the Redis key.
            timeout: TTL in seconds (>= 0.001).
            token: the value to store (a new random one when None).
            wait: seconds to keep trying while the lock is held (0 = one try,
                ``math.inf`` = no limit). None (what celery-once passes)
                means the settings decide: ``blocking_timeout`` when
                ``blocking`` is True, else one try. Polls every 20 ms.
            keep_waiting: called with the holder; waiting stops at once when it
                returns False (e.g. the holder is a run for the same scheduled time).
        Returns the token stored.
        Raises:
            LockHeld: another token holds the lock; ``countdown`` is the seconds left.
            ValueError: ``timeout`` is not a number of seconds >= 0.001, or
                ``wait`` is negative or NaN.
        """
        _check_ttl("timeout", timeout)
        token = token or uuid.uuid4().hex
        wait = self.default_wait if wait is None else wait
        if not wait >= 0:  # also NaN, which would wait forever
            raise ValueError(f"wait={wait!r} is invalid: a number of seconds >= 0 (math.inf: no limit)")
        deadline = time.monotonic() + wait
        lock = self._stateless_lock(key, timeout)
        while True:
            # do_acquire is acquire's one SET NX PX, without its own waiting
            # loop (ours consults keep_waiting) and without remembering the
            # token on the Lock object (the token is the caller's to keep).
            if lock.do_acquire(token):
                return token
            holder = self.holder(key)
            if holder is None:
                continue  # freed between SET and GET: try again at once
            left = deadline - time.monotonic()
            if left <= 0 or (keep_waiting is not None and not keep_waiting(holder)):
                raise LockHeld(holder.ttl_ms / 1000, holder)
            time.sleep(min(POLL_SECONDS, left))

    def claim(self, key: str, token: str, timeout: float) -> int:
        """Confirm or take the lock for ``token``, resetting its TTL to ``timeout`` seconds.

        Returns :data:`CLAIM_HELD_ALREADY` (``token`` held it), :data:`CLAIM_TAKEN`
        (it was free and ``token`` holds it now) or :data:`CLAIM_REFUSED`
        (another token holds it).
        Raises:
            ValueError: ``timeout`` is not a number of seconds >= 0.001.
        """
        _check_ttl("timeout", timeout)
        lock = self.owned_lock(key, timeout, token)
        while True:
            try:
                lock.reacquire()
                return CLAIM_HELD_ALREADY
            except LockNotOwnedError:
                pass
            if lock.acquire(blocking=False, token=token):
                return CLAIM_TAKEN
            holder = self.holder(key)
            if holder is not None and holder.token != token:
                return CLAIM_REFUSED
            # Freed meanwhile, or taken under this very token (a second copy of
            # the same message): look again.

    def renew(self, key: str, token: str, timeout: float) -> bool:
        """Reset the lock's TTL to ``timeout`` seconds if ``token`` holds it; False if it was lost.

        Raises:
            ValueError: ``timeout`` is not a number of seconds >= 0.001.
        """
        _check_ttl("timeout", timeout)
        try:
            return self.owned_lock(key, timeout, token).reacquire()
        except LockNotOwnedError:
            return False

    def take_back(self, key: str, token: str, timeout: float) -> bool:
        """Set ``key`` to ``token`` for ``timeout`` seconds only if it is free (``SET NX PX``); True if taken.

        For a running holder whose key vanished (Redis restarted empty or
        failed over): it still has its token and takes the lock again.
        Raises:
            ValueError: ``timeout`` is not a number of seconds >= 0.001.
        """
        _check_ttl("timeout", timeout)
        return bool(self._stateless_lock(key, timeout).do_acquire(token))

    def clear_lock(self, key: str, token: str | None = None) -> bool:
        """Release ``key``; True when a lock was deleted.

        With ``token``: only if that token holds it. Without: forced (operators only).
        """
        if token is None:
            return bool(self.redis.delete(key))
        try:
            self._stateless_lock(key, None).do_release(token)  # redis-py's compare-and-delete script
        except LockNotOwnedError:
            return False
        return True

    def holder(self, key: str) -> LockHolder | None:
        """Return the current holder of ``key`` or None when the lock is free."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, ttl = pipe.execute()
        if value is None:
            return None
        return LockHolder(token=value.decode() if isinstance(value, bytes) else value, ttl_ms=max(int(ttl), 0))


def default_backend() -> OwnedRedisBackend:
    """The lock backend on the Redis of ``settings.CELERY_ONCE`` (the jobs' lock store)."""
    from django.conf import settings

    once: dict[str, Any] = settings.CELERY_ONCE
    return OwnedRedisBackend(once["settings"])
